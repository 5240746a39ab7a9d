"""Loss functions: tensors in, tensors out. No modules, no state, no Lightning.

Targets follow nanoGPT's layout: `targets[b, t]` is the token that should follow `input_ids[b, t]`,
and positions that carry no loss hold `IGNORE_INDEX`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def prefix_lm_targets(targets: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """Targets with the first `prefix_length` positions ignored (loss only after the prefix)."""
    if prefix_length <= 0:
        return targets
    out = targets.clone()
    out[:, :prefix_length] = IGNORE_INDEX
    return out


def next_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of (B, T, V) logits against (B, T) targets, averaged over non-ignored tokens.

    Logits are upcast to fp32 so bf16 training computes the log-softmax accurately. With
    `reduction="sum"` the summed NLL in nats is returned (for perplexity and bits-per-byte).
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction=reduction,
    )
