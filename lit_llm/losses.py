"""Loss functions: tensors in, tensors out. No modules, no state, no Lightning.

Targets follow nanoGPT's layout: `targets[b, t]` is the token that should follow `input_ids[b, t]`,
and positions that carry no loss hold `IGNORE_INDEX`.
"""

from __future__ import annotations

import math

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


# ---- sequence log-probabilities -------------------------------------------------------------------


def token_logps(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, T) log-probability of each target token under (B, T, V) logits; 0 where the target is ignored."""
    mask = targets != ignore_index
    safe = torch.where(mask, targets, 0)
    logps = torch.gather(logits.float().log_softmax(-1), -1, safe.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def sequence_logps(
    logits: torch.Tensor, targets: torch.Tensor, average: bool = False, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """(B,) log-probability of each row's response: the sum over its non-ignored targets, or with `average`
    the per-token mean (the length-normalized form IPO and ORPO use). A row without targets gives 0."""
    logps = token_logps(logits, targets, ignore_index).sum(-1)
    if average:
        logps = logps / (targets != ignore_index).sum(-1).clamp(min=1)
    return logps


# ---- reward modelling -----------------------------------------------------------------------------


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Pairwise reward-model loss, -log sigmoid(r_chosen - r_rejected - margin), averaged over pairs.

    `margin` (B,), when given, asks for a gap of at least that much (Llama 2's margin loss). `center_coef`
    adds `center_coef * mean((r_chosen + r_rejected)^2)`, which keeps rewards centred on zero (Eisenstein et
    al. 2023; TRL's `center_rewards_coefficient`).
    """
    diff = chosen_rewards.float() - rejected_rewards.float()
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * (chosen_rewards.float() + rejected_rewards.float()).pow(2).mean()
    return loss


# ---- direct preference optimization ---------------------------------------------------------------

DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses and the implicit rewards `beta * (policy - reference)` of each response.

    With h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected), the (B,) log-probs
    of the responses under the policy and the frozen reference:

        sigmoid  -(1 - e) log s(beta h) - e log s(-beta h)        DPO (Rafailov et al. 2023); with e > 0 the
                                                                  conservative cDPO of label noise e
        robust   (-(1 - e) log s(beta h) + e log s(-beta h)) / (1 - 2e)    rDPO (Chowdhury et al. 2024)
        hinge    max(0, 1 - beta h)                                SLiC (Zhao et al. 2023)
        ipo      (h - 1 / (2 beta))^2                              IPO (Azar et al. 2023); pass the per-token
                                                                  mean log-probs for its length-normalized form
    Returns (losses, chosen_rewards, rejected_rewards), each (B,); the rewards are detached.
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {', '.join(DPO_LOSSES)}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = policy_chosen.float() - reference_chosen.float()
    rejected_ratio = policy_rejected.float() - reference_rejected.float()
    h = chosen_ratio - rejected_ratio
    e = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - e) * F.logsigmoid(beta * h) - e * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1 - 2 * e)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


# ---- odds-ratio preference optimization -----------------------------------------------------------


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012): log(-expm1(x)) above -ln 2, where
    1 - exp(x) cancels, and log1p(-exp(x)) below, where exp(x) is small. x is kept below -1e-12 (p = 1 exactly
    would give log 0)."""
    x = x.clamp(max=-1e-12)
    near = x > -math.log(2)
    # Each branch sees only inputs it is accurate on, so the branch torch.where drops has finite gradients too.
    return torch.where(near, torch.log(-torch.expm1(x.clamp(min=-math.log(2)))), torch.log1p(-torch.exp(x.clamp(max=-math.log(2)))))


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of per-token mean log-probs log p (< 0): log p - log(1 - exp(log p))."""
    return mean_logps - log1mexp(mean_logps)


def orpo_loss(
    chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, chosen_nll: torch.Tensor, beta: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al. 2024): `chosen_nll - beta * mean(log sigmoid(log odds_chosen - log odds_rejected))`.

    `chosen_logps` and `rejected_logps` are (B,) per-token mean log-probs of the responses; `chosen_nll` is the
    SFT loss on the chosen responses; `beta` is the paper's lambda. Returns (loss, log_odds_ratio, log_odds_chosen):
    the (B,) log sigmoid of the log-odds difference and the difference itself.
    """
    difference = log_odds(chosen_logps.float()) - log_odds(rejected_logps.float())
    ratio = F.logsigmoid(difference)
    return chosen_nll - beta * ratio.mean(), ratio.detach(), difference.detach()
