"""`RolloutEngines`: the RL stages' choice of generation engine (`rollout_engine: native | vllm`) and keeping the
vLLM engine's weights in step with the policy: synced before it generates once `sync_every` optimizer steps have
passed. The engine's own log-probs of the tokens it sampled are compared with the training model's
(`rollout/logprob_diff_mean`, `max`): the training-inference mismatch. The loss always uses the training model's,
and `tis_cap` weights it by their ratio."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_llm.errors import ConfigError
from lit_llm.rl import truncated_is_weights
from lit_llm.rollout.layout import layout as rollout_layout
from lit_llm.rollout.layout import response_logps

VLLM_OPTIONS = ("gpu_memory_utilization", "max_model_len", "enforce_eager", "sleep", "dtype")


class RolloutEngines:
    def __init__(self, kind: str, options: dict[str, Any] | None, sync_every: int, tis_cap: float | None = None
                 ) -> None:  # fmt: skip
        if kind not in ("native", "vllm"):
            raise ConfigError(f"model.rollout_engine must be 'native' or 'vllm', got {kind!r}")
        if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
            raise ConfigError(f"model.sync_every must be an integer >= 1, got {sync_every!r}")
        unknown = sorted(set(options or {}) - set(VLLM_OPTIONS))
        if unknown:
            raise ConfigError(f"model.vllm: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(VLLM_OPTIONS)}")
        if options and kind != "vllm":
            raise ConfigError("model.vllm options are set but model.rollout_engine is 'native'; set it to 'vllm'")
        if tis_cap is not None and (isinstance(tis_cap, bool) or not isinstance(tis_cap, (int, float))
                                    or tis_cap <= 0):
            raise ConfigError(f"model.tis_cap must be a number > 0 or null, got {tis_cap!r}")
        if tis_cap is not None and kind != "vllm":
            raise ConfigError("model.tis_cap corrects for the vLLM engine's sampling (its log-probs against the "
                              "training model's); with model.rollout_engine native the sampler is the training "
                              "model: set rollout_engine vllm or drop tis_cap")
        self.sync_every, self.tis_cap = sync_every, tis_cap
        self.updates = 0
        self.engine = None
        if kind == "vllm":
            from lit_llm.rollout.engines import VLLMEngine

            self.engine = VLLMEngine(**(options or {}))

    def start(self) -> None:
        """At the start of a fit: the engine is synced before it first generates, so it holds the policy as it
        starts, restored weights included (under FSDP Lightning restores them after `on_fit_start`)."""
        if self.engine is not None:
            self.engine.mark_stale()

    def after_step(self) -> None:
        """Call after each optimizer step: after every `sync_every`-th the policy's weights are loaded into the
        engine, before it next generates (once, however many updates a rollout batch takes)."""
        if self.engine is None:
            return
        self.updates += 1
        if self.updates % self.sync_every == 0:
            self.engine.mark_stale()

    @torch.no_grad()
    def logprob_gap(self, model: nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
                    temperature: float) -> dict[str, float]:
        """Mean and max |training model - engine| log-prob over the last generated tokens; {} for the native
        engine (it is the training model)."""
        theirs = getattr(self.engine, "last_logprobs", None)
        if self.engine is None or not theirs or len(theirs) != len(responses):
            return {}
        rows = [i for i, r in enumerate(responses) if r]
        if not rows:
            return {}
        device = next(model.parameters()).device
        exp = rollout_layout([prompts[i] for i in rows], [responses[i] for i in rows], pad_id, device)
        was_training = model.training
        model.eval()
        ours = response_logps(model, exp["ids"], exp["valid"], exp["P"], model.config.vocab_size,
                              max(temperature, 1e-6))[0]
        model.train(was_training)
        theirs, covered = aligned([theirs[i] for i in rows], ours)
        gap = (ours - theirs).abs()[covered & exp["valid"][:, exp["P"] :]]
        return {"rollout/logprob_diff_mean": float(gap.mean()), "rollout/logprob_diff_max": float(gap.max())}

    def last_logps(self, count: int) -> list[list[float]]:
        """The engine's log-probs of each token of the `count` answers it last generated; empty lists for the
        native engine."""
        theirs = getattr(self.engine, "last_logprobs", None)
        if not theirs or len(theirs) != count:
            return [[] for _ in range(count)]
        return [list(row) for row in theirs]

    def tis_weights(self, train_logps: torch.Tensor, engine_logps: list[list[float]], mask: torch.Tensor
                    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:  # fmt: skip
        """With `tis_cap`: the truncated importance weights (B, R) of the training model's log-probs `train_logps`
        against the engine's, and their statistics; else (None, {})."""
        if self.tis_cap is None:
            return None, {}
        rollout, covered = aligned(engine_logps, train_logps)
        return truncated_is_weights(train_logps, rollout, mask & covered, self.tis_cap)


def aligned(engine_logps: list[list[float]], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's per-answer log-probs as a (B, R) float tensor beside `like` (the training model's, response
    token t in column t), and where they exist (an answer's engine row may be shorter, or empty)."""
    values = torch.zeros(like.shape, dtype=torch.float32)
    for i, row in enumerate(engine_logps):
        n = min(len(row), values.size(1))
        values[i, :n] = torch.tensor(row[:n], dtype=torch.float32)
    lengths = torch.tensor([len(row) for row in engine_logps], dtype=torch.long)
    covered = torch.arange(values.size(1))[None, :] < lengths[:, None]
    return values.to(like.device), covered.to(like.device)
