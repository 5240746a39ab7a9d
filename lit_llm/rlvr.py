"""The tensor math of critic-free RL on verifiable rewards (GRPO and its fixes, RLOO, REINFORCE++): advantages from
groups of answers to one prompt, the clipped token- or sequence-level surrogate, how per-token losses are
aggregated, and DAPO's length shaping.

Pure functions, as in `lit_llm.rl` (PPO's, whose masked statistics and KL estimators they reuse). A rollout batch
holds whole groups: rows `g * G .. g * G + G - 1` are the G answers to prompt g. Per-token tensors are
response-aligned (B, R) with `mask` True on each answer's tokens; `valid` (B,) marks answers whose reward counts
(a skipped reward takes no part in its group's statistics).

References: DeepSeekMath (GRPO, Shao et al. 2024), Dr. GRPO (Liu et al. 2025), DAPO (Yu et al. 2025), GSPO (Zheng
et al. 2025), RLOO (Ahmadian et al. 2024), REINFORCE++ (Hu 2025), dual-clip PPO (Ye et al. 2020); TRL's
GRPOTrainer and verl's core algorithms for the conventions.
"""

from __future__ import annotations

import torch

from lit_llm.rl import Reduce, masked_moments, masked_whiten

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_pp_baseline")  # need num_generations >= 2


def _groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    if x.numel() % group_size:
        raise ValueError(f"{x.numel()} rewards do not split into groups of {group_size}")
    return x.view(-1, group_size)


def group_mean_std(
    scores: torch.Tensor, group_size: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per answer (B,): its group's mean score, unbiased std, and number of valid answers, over valid answers only
    (a group with fewer than 2 has std 0)."""
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    s, v = _groups(scores.double(), group_size), _groups(valid, group_size).double()
    n = v.sum(1, keepdim=True)
    mean = (s * v).sum(1, keepdim=True) / n.clamp(min=1)
    # A group of equal rewards has exactly that mean (the division may round a last bit off), so its answers'
    # advantages are exactly 0.
    high = torch.where(v > 0, s, torch.full_like(s, -torch.inf)).max(1, keepdim=True).values
    low = torch.where(v > 0, s, torch.full_like(s, torch.inf)).min(1, keepdim=True).values
    mean = torch.where(high == low, high, mean)
    var = (((s - mean) * v) ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)
    expand = lambda t: t.expand_as(s).reshape(-1).to(scores.dtype)  # noqa: E731
    return expand(mean), expand(var.sqrt() * (n > 1)), expand(n)


def grpo_advantages(
    scores: torch.Tensor,
    group_size: int,
    scale_rewards: str = "group",
    valid: torch.Tensor | None = None,
    reduce: Reduce | None = None,
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO: (r - group mean) / (std + eps), the std of the group (`scale_rewards="group"`, DeepSeekMath), of the
    whole batch across ranks ("batch"), or no scaling ("none", Dr. GRPO). Equal rewards give 0, never NaN."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    mean, std, _ = group_mean_std(scores, group_size, valid)
    centered = scores - mean
    if scale_rewards == "batch":
        std = masked_moments(scores, valid, reduce)[1].sqrt().to(scores.dtype)
    if scale_rewards != "none":
        centered = centered / (std + eps)
    return torch.where(valid, centered, torch.zeros_like(centered))


def rloo_advantages(scores: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """RLOO: r_i minus the mean of the other valid answers of its group (0 for an answer alone in its group)."""
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    mean, _, n = group_mean_std(scores, group_size, valid)
    # r - (n * mean - r) / (n - 1) = n / (n - 1) * (r - mean): exactly 0 for a group of equal rewards.
    advantages = torch.where(n > 1, (scores - mean) * n / (n - 1).clamp(min=1), torch.zeros_like(scores))
    return torch.where(valid, advantages, torch.zeros_like(advantages))


def reinforce_pp_advantages(
    scores: torch.Tensor,
    token_kl: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    group_size: int | None = None,
    valid: torch.Tensor | None = None,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """REINFORCE++: per-token rewards -beta * KL with the score added at each answer's last token, returns summed
    to the end (gamma = 1), whitened over every valid token of the batch across ranks. With `group_size`
    (REINFORCE++-baseline) the group's mean score is subtracted first. Returns (B, R) advantages."""
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    if group_size is not None:
        scores = scores - group_mean_std(scores, group_size, valid)[0]
    mask = mask & valid[:, None]
    rewards = -beta * token_kl * mask
    last = (mask.sum(1) - 1).clamp(min=0)
    rows = torch.arange(scores.size(0), device=scores.device)
    rewards[rows, last] += torch.where(valid, scores, torch.zeros_like(scores)).to(rewards.dtype)
    returns = rewards.flip(1).cumsum(1).flip(1) * mask
    return masked_whiten(returns, mask, reduce=reduce)


def sequence_advantages_to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A per-answer advantage (B,) on each of its tokens (B, R)."""
    return advantages[:, None].to(torch.float32) * mask


def importance_log_ratio(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """log(pi / pi_old) per token ("token"), or per answer as the mean over its tokens, broadcast to them
    ("sequence", GSPO: the length-normalised sequence likelihood ratio)."""
    log_ratio = logps - old_logps
    if level == "token":
        return log_ratio
    if level == "sequence":
        m = mask.to(log_ratio.dtype)
        seq = (log_ratio * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        return seq.expand_as(log_ratio)
    raise ValueError(f"importance_sampling_level must be 'token' or 'sequence', got {level!r}")


def clipped_surrogate(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    delta: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) (DAPO's clip-higher when
    eps_high > eps_low); with `delta` (dual clip) a negative advantage's loss is capped at -delta * A.

    Returns the (B, R) loss and boolean (B, R) maps: `low` where the ratio is below 1 - eps_low with A < 0, `high`
    above 1 + eps_high with A > 0 (where clipping zeroes the gradient), `dual` where the dual clip binds."""
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    loss = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(loss, dtype=torch.bool)
    if delta is not None:
        cap = -advantages * delta
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(advantages < 0, torch.minimum(loss, cap), loss)
    with torch.no_grad():
        low = (ratio < 1.0 - epsilon_low) & (advantages < 0)
        high = (ratio > 1.0 + epsilon_high) & (advantages > 0)
    return loss, {"low": low, "high": high, "dual": dual}


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, normalizer: float | None = None) -> torch.Tensor:
    """One loss from per-token losses (B, R):

    grpo     mean over each answer's tokens, then over answers (long answers weigh less per token);
    bnpo     mean over the tokens of the batch;
    dr_grpo  sum over tokens / (answers x max_completion_length), a constant (Dr. GRPO: no length bias);
    dapo     sum over tokens / the tokens of the whole minibatch on all ranks (DAPO's token-level mean).

    `normalizer` is what the sum is divided by for the last three (for grpo: the answers), so a minibatch split
    into micro-batches accumulates exactly the minibatch's loss; None takes it from this batch (for dr_grpo it is
    then required)."""
    m = mask.to(per_token.dtype)
    if loss_type == "grpo":
        per_answer = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
        return per_answer.sum() / (normalizer if normalizer is not None else per_token.size(0))
    if loss_type in ("bnpo", "dapo"):
        return (per_token * m).sum() / (normalizer if normalizer is not None else m.sum().clamp(min=1))
    if loss_type == "dr_grpo":
        if normalizer is None:
            raise ValueError("dr_grpo divides by answers x max_completion_length: pass it as normalizer")
        return (per_token * m).sum() / normalizer
    raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")


def overlong_penalty(lengths: torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment per answer: 0 up to max_length - buffer tokens, then falling linearly to
    -factor at max_length (and below it beyond)."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_length - buffer
    excess = (lengths.float() - start).clamp(min=0)
    return -factor * excess / buffer


def informative_groups(scores: torch.Tensor, group_size: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B / group_size,) True for groups with two valid rewards that differ (DAPO's dynamic sampling keeps these: a
    group of equal rewards has zero advantage and gives no gradient)."""
    valid = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    s, v = _groups(scores, group_size), _groups(valid, group_size)
    high = torch.where(v, s, torch.full_like(s, -torch.inf)).max(1).values
    low = torch.where(v, s, torch.full_like(s, torch.inf)).min(1).values
    return (v.sum(1) >= 2) & (high > low)
