"""PPO's tensor math for RLHF: KL estimators, masked statistics, GAE, the clipped losses, the KL controller.

Pure functions, as in `lit_llm.losses`. Tensors are response-aligned, (B, R): column t is a row's t-th response
token, and `mask` is True on the tokens of each response and False on the padding after it ends (so a row's
valid tokens are a prefix). The recipe follows "The N+ Implementation Details of RLHF with PPO" (Huang et al.
2024) and TRL's PPOTrainer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

KL_ESTIMATORS = ("k1", "k3")


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    k1 = log(p/q), unbiased but of high variance and negative on some tokens; k3 = (q/p - 1) - log(q/p), unbiased
    and never negative (Schulman, "Approximating KL divergence", 2020). p is the policy, q the reference.
    """
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over the True entries of `mask` (all of them, or along `dim`); 0 where there are none."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


Reduce = Callable[[torch.Tensor], torch.Tensor]


def masked_moments(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce | None = None) -> tuple[torch.Tensor, ...]:
    """(mean, unbiased variance, count) of the masked entries; `reduce` sums a tensor across processes (DDP), so
    every rank gets the statistics of all ranks' entries."""
    m = mask.to(torch.float64)
    x64 = x.detach().to(torch.float64) * m
    sums = torch.stack([x64.sum(), (x64 * x64).sum(), m.sum()])
    if reduce is not None:
        sums = reduce(sums)
    total, squares, n = sums.unbind()
    mean = total / n.clamp(min=1)
    var = (squares - n * mean * mean).clamp(min=0) / (n - 1).clamp(min=1)
    return mean, var, n


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, reduce: Reduce | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / std over the masked entries (0 elsewhere); with `shift_mean=False` the mean is kept, only the
    scale changes (how rewards are whitened). Statistics span all ranks when `reduce` is given."""
    mean, var, _ = masked_moments(x, mask, reduce)
    mean, var = mean.to(x.dtype), var.to(x.dtype)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over each row's response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V = 0 after the last token; A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns = advantages + values), both 0 off the mask.
    """
    m = mask.to(values.dtype)
    values, rewards = values * m, rewards * m
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    R = rewards.size(1)
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * m


def ppo_policy_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped surrogate, mean over tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), each token's
    term times its `weight` when given (truncated importance sampling, `truncated_is_weights`).

    Returns the loss and detached statistics: `clipfrac` (share of tokens where the clipped term is taken),
    `approxkl` (0.5 * mean squared log-ratio), `ratio` (mean ratio) and `ratio_var`.
    """
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    per_token = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_token if weights is None else per_token * weights, mask)
    with torch.no_grad():
        ratio_mean = masked_mean(ratio, mask)
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": ratio_mean,
            "ratio_var": masked_mean((ratio - ratio_mean) ** 2, mask),
        }
    return loss, stats


def truncated_is_weights(
    train_logps: torch.Tensor, rollout_logps: torch.Tensor, mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance sampling for rollouts drawn by another engine (vLLM) than the training model (Yao et
    al. 2025, "Your efficient RL framework secretly brings you off-policy RL training"; verl's `tis_imp_ratio_cap`):
    per token min(pi_train(y) / pi_rollout(y), cap), detached, 1 off the mask. The policy-gradient term of each
    token is multiplied by it, correcting for the engines' mismatch. Returns the weights and
    `rollout/tis_weight_mean` and `rollout/tis_truncated_frac` (share of tokens whose ratio exceeded the cap)."""
    with torch.no_grad():
        ratio = torch.exp(train_logps.float() - rollout_logps.float())
        weights = torch.where(mask, ratio.clamp(max=cap), torch.ones_like(ratio))
        stats = {"rollout/tis_weight_mean": masked_mean(weights, mask),
                 "rollout/tis_truncated_frac": masked_mean((ratio > cap).float(), mask)}  # fmt: skip
    return weights, stats


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * mean over tokens of max((V - G)^2, (V_clipped - G)^2), V_clipped = V_old + clip(V - V_old, +-eps);
    returns the loss and the share of tokens where the clipped term is taken."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return loss, masked_mean((clipped_loss > unclipped_loss).float(), mask).detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of each row of logits: logsumexp(z) - sum softmax(z) * z."""
    logits = logits.float()
    probs = logits.softmax(-1)
    # -inf logits (masked vocabulary) have probability 0; replacing them before the product keeps 0 * -inf, and
    # its gradient, from turning into NaN.
    finite = torch.where(torch.isinf(logits), torch.zeros_like(logits), logits)
    return torch.logsumexp(logits, -1) - (probs * finite).sum(-1)


def adaptive_kl_coef(coef: float, kl: float, target: float, horizon: int, n_steps: int) -> float:
    """Ziegler et al.'s (2019) proportional controller: move the KL coefficient so the measured KL tracks `target`.

    error = clip(kl / target - 1, -0.2, 0.2); coef * (1 + error * n_steps / horizon), `n_steps` the rollouts
    since the last update."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)
