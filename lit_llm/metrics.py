"""torchmetrics for language modelling: perplexity and bits-per-byte, summed exactly across ranks; and pass@k."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from lit_llm.losses import IGNORE_INDEX


class LanguageModelMetrics(Metric):
    """Accumulates summed NLL (nats), target tokens and the UTF-8 bytes those tokens stand for.

    `compute()` returns the token-weighted mean loss, its perplexity and, when a table of bytes per
    token id is given, bits per byte = total nats / (ln 2 * total bytes) — comparable across tokenizers.
    """

    full_state_update = False

    def __init__(self, token_bytes: torch.Tensor | None = None) -> None:
        super().__init__()
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("bytes", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.count_correct = False
        self.token_bytes: torch.Tensor | None
        if token_bytes is not None:
            self.register_buffer("token_bytes", token_bytes.long(), persistent=False)
        else:
            self.token_bytes = None

    def update(self, nll_sum: torch.Tensor, targets: torch.Tensor, correct: torch.Tensor | None = None) -> None:
        """`correct`, when given, is the number of targets the model ranks first (see `token_accuracy`)."""
        # Out-of-place on purpose: after trainer.validate() (inference mode) the reset states are
        # inference tensors, and fit's validation (no_grad) may not update those in place.
        valid = targets != IGNORE_INDEX
        self.nll = self.nll + nll_sum.detach().double()
        self.tokens = self.tokens + valid.sum()
        if correct is not None:
            self.correct = self.correct + correct
            self.count_correct = True
        if self.token_bytes is not None:
            self.bytes = self.bytes + self.token_bytes[targets[valid]].sum()

    def compute(self) -> dict[str, torch.Tensor]:
        loss = self.nll / self.tokens.clamp(min=1)
        out = {"loss": loss.float(), "ppl": loss.exp().float()}
        if self.token_bytes is not None and self.bytes > 0:
            out["bpb"] = (self.nll / (math.log(2) * self.bytes)).float()
        if self.count_correct:
            out["token_accuracy"] = (self.correct / self.tokens.clamp(min=1)).float()
        return out


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, counted): targets (not IGNORE_INDEX) that are the argmax of their logits, and all targets."""
    valid = targets != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == targets) & valid
    return correct.sum(), valid.sum()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021) from n samples of which c are correct: 1 - C(n - c, k) / C(n, k), the
    chance that k of the n samples drawn without replacement hold at least one correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
