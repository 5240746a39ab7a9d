"""PPO's tensor math (`lit_llm.rl`) against numbers worked out by hand: KL estimators (exact values and their
expectation under sampling), masked statistics with a simulated two-rank reduce, GAE, the clipped policy and value
losses (loss, statistics and which term carries the gradient), entropy with -inf logits, and the KL controller."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lit_llm.rl import (
    truncated_is_weights,
    adaptive_kl_coef,
    entropy_from_logits,
    gae,
    kl_estimate,
    masked_mean,
    masked_moments,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ---- KL estimators ------------------------------------------------------------------------------------------

LOGPS = [-0.5, -1.2, -2.0, -0.1]
REF_LOGPS = [-0.7, -1.2, -1.0, -3.0]


def test_k1_is_the_log_ratio() -> None:
    """k1 = log p - log q, token by token (negative where the reference is more likely)."""
    got = kl_estimate(t(LOGPS), t(REF_LOGPS), "k1")
    expected = [0.2, 0.0, -1.0, 2.9]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_k3_matches_its_formula_and_is_never_negative() -> None:
    """k3 = (r - 1) - log r with r = q/p = exp(ref - logp): >= 0 everywhere, 0 exactly where p == q."""
    got = kl_estimate(t(LOGPS), t(REF_LOGPS), "k3").tolist()
    for value, lp, ref in zip(got, LOGPS, REF_LOGPS):
        r = math.exp(ref - lp)
        assert value == pytest.approx((r - 1) - math.log(r), abs=1e-12)
    assert got[1] == 0.0  # equal log-probs
    # r = exp(-1) and r = exp(1): (e^-1 - 1) + 1 = e^-1 and (e - 1) - 1 = e - 2.
    assert kl_estimate(t([0.0, 0.0]), t([-1.0, 1.0]), "k3").tolist() == pytest.approx([math.exp(-1), math.e - 2])
    grid = torch.linspace(-8, 0, 101, dtype=torch.float64)
    assert (kl_estimate(grid, grid.flip(0), "k3") >= 0).all()


def test_unknown_estimator_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown KL estimator 'k2'.*k1, k3"):
        kl_estimate(t([0.0]), t([0.0]), "k2")


def test_estimators_average_to_the_exact_kl() -> None:
    """Over tokens sampled from the policy p, the means of k1 and k3 approach KL(p || q) = sum p log(p / q)."""
    p, q = [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]
    exact = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))  # 0.5 ln 2.5 + 0.2 ln 0.4 = 0.2749
    assert exact == pytest.approx(0.5 * math.log(2.5) + 0.2 * math.log(0.4))
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.multinomial(t(p), 200_000, replacement=True, generator=gen)
    logps, ref_logps = t(p).log()[tokens], t(q).log()[tokens]
    for estimator in ("k1", "k3"):
        assert kl_estimate(logps, ref_logps, estimator).mean().item() == pytest.approx(exact, abs=0.01)


# ---- masked statistics --------------------------------------------------------------------------------------

X = [[1.0, 2.0, 30.0], [4.0, -50.0, 60.0]]
MASK = [[True, True, False], [True, False, False]]  # entries 1, 2, 4


def test_masked_mean_overall_per_row_and_empty() -> None:
    """Only masked entries count; a row or tensor with no masked entry averages to 0, not NaN."""
    x, mask = t(X), torch.tensor(MASK)
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([1.5, 4.0])
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0
    assert masked_mean(x, torch.tensor([[True, False, False], [False, False, False]]), dim=1).tolist() == [1.0, 0.0]


def test_masked_moments_are_mean_unbiased_variance_and_count() -> None:
    """Of 1, 2, 4: mean 7/3, variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3, count 3."""
    mean, var, n = masked_moments(t(X), torch.tensor(MASK))
    assert mean.item() == pytest.approx(7 / 3)
    assert var.item() == pytest.approx(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert var.item() == pytest.approx(7 / 3)
    assert n.item() == 3


def test_masked_whiten_centres_and_scales_masked_entries() -> None:
    """Masked entries get mean 0 and unit (unbiased) std; the rest are 0."""
    out = masked_whiten(t(X), torch.tensor(MASK))
    std = math.sqrt(7 / 3)
    expected = [[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]]
    assert out.tolist()[0] == pytest.approx(expected[0], abs=1e-6)
    assert out.tolist()[1] == pytest.approx(expected[1], abs=1e-6)
    kept = [out[0, 0].item(), out[0, 1].item(), out[1, 0].item()]
    assert statistics.mean(kept) == pytest.approx(0.0, abs=1e-9)
    assert statistics.stdev(kept) == pytest.approx(1.0, abs=1e-6)


def test_masked_whiten_without_shifting_keeps_the_mean() -> None:
    """shift_mean=False rescales around the mean: (x - m) / s + m, so the masked mean stays m."""
    out = masked_whiten(t(X), torch.tensor(MASK), shift_mean=False)
    std, m = math.sqrt(7 / 3), 7 / 3
    assert [out[0, 0].item(), out[0, 1].item(), out[1, 0].item()] == pytest.approx(
        [(1 - m) / std + m, (2 - m) / std + m, (4 - m) / std + m], abs=1e-6
    )
    kept = [out[0, 0].item(), out[0, 1].item(), out[1, 0].item()]
    assert statistics.mean(kept) == pytest.approx(m)
    assert statistics.stdev(kept) == pytest.approx(1.0, abs=1e-6)
    assert out[0, 2].item() == out[1, 1].item() == out[1, 2].item() == 0.0


def test_reduce_gives_the_statistics_of_all_ranks() -> None:
    """A reduce that adds another rank's (sum, sum of squares, count) makes each rank see the union of entries."""
    x_a, mask_a = t(X), torch.tensor(MASK)  # this rank: 1, 2, 4
    other = [10.0, -3.0, 0.5, 7.0]  # the other rank's masked entries
    other_sums = t([sum(other), sum(v * v for v in other), len(other)])
    calls = []

    def reduce(sums: torch.Tensor) -> torch.Tensor:
        calls.append(sums.clone())
        return sums + other_sums

    everything = [1.0, 2.0, 4.0] + other
    mean, var, n = masked_moments(x_a, mask_a, reduce)
    assert calls[0].tolist() == pytest.approx([7.0, 21.0, 3.0])  # this rank's own sums went into the reduce
    assert mean.item() == pytest.approx(statistics.mean(everything))
    assert var.item() == pytest.approx(statistics.variance(everything))
    assert n.item() == 7

    out = masked_whiten(x_a, mask_a, reduce=reduce)
    m, s = statistics.mean(everything), statistics.stdev(everything)
    assert out.flatten().tolist() == pytest.approx([(1 - m) / s, (2 - m) / s, 0.0, (4 - m) / s, 0.0, 0.0], abs=1e-6)


# ---- GAE ----------------------------------------------------------------------------------------------------

REWARDS = [[0.1, -0.2, 0.0, 1.5], [0.0, 1.0, 9.0, 9.0]]
VALUES = [[0.3, 0.4, -0.1, 0.6], [0.5, 0.2, 9.0, 9.0]]  # row 2's last two are padding: must not count
GAE_MASK = [[True, True, True, True], [True, True, False, False]]


def hand_gae(rewards: list[float], values: list[float], n: int, gamma: float, lam: float) -> tuple[list, list]:
    """The recursion over a row's first n tokens, written out; padding gets 0."""
    advantages = [0.0] * len(rewards)
    next_advantage = 0.0
    for step in reversed(range(n)):
        next_value = values[step + 1] if step + 1 < n else 0.0
        delta = rewards[step] + gamma * next_value - values[step]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[step] = next_advantage
    returns = [advantages[i] + values[i] if i < n else 0.0 for i in range(len(rewards))]
    return advantages, returns


def test_gae_matches_the_recursion_by_hand() -> None:
    """Advantages and returns per row with V = 0 after the last valid token, zeros on padding."""
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(t(REWARDS), t(VALUES), torch.tensor(GAE_MASK), gamma, lam)
    for row, n in ((0, 4), (1, 2)):
        exp_adv, exp_ret = hand_gae(REWARDS[row], VALUES[row], n, gamma, lam)
        assert advantages[row].tolist() == pytest.approx(exp_adv, abs=1e-12)
        assert returns[row].tolist() == pytest.approx(exp_ret, abs=1e-12)
    # Row 2 by hand: delta_1 = 1 - 0.2 = 0.8 = A_1; delta_0 = 0 + 0.9 * 0.2 - 0.5 = -0.32, A_0 = -0.32 + 0.72 * 0.8.
    assert advantages[1].tolist() == pytest.approx([0.256, 0.8, 0.0, 0.0], abs=1e-12)
    assert returns[1].tolist() == pytest.approx([0.756, 1.0, 0.0, 0.0], abs=1e-12)
    # Row 1's last token: delta = 1.5 - 0.6 = 0.9.
    assert advantages[0, 3].item() == pytest.approx(0.9)


def test_gae_with_gamma_and_lambda_one_returns_rewards_to_go() -> None:
    """With gamma = lam = 1, A_t = sum_{k >= t} r_k - V_t, so returns are the reward-to-go sums."""
    _, returns = gae(t(REWARDS), t(VALUES), torch.tensor(GAE_MASK), gamma=1.0, lam=1.0)
    assert returns[0].tolist() == pytest.approx([1.4, 1.3, 1.5, 1.5], abs=1e-12)
    assert returns[1].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0], abs=1e-12)


# ---- PPO policy loss ----------------------------------------------------------------------------------------

EPS = 0.2


@pytest.mark.parametrize(
    ("advantage", "ratio", "loss", "grad", "clipfrac"),
    [
        (1.0, 1.5, -1.2, 0.0, 1.0),  # A > 0, ratio above 1 + eps: clipped at -A (1 + eps), no gradient
        (1.0, 0.5, -0.5, -0.5, 0.0),  # A > 0, ratio below 1 - eps: unclipped -A ratio, d/dlogp = -A ratio
        (-1.0, 0.5, 0.8, 0.0, 1.0),  # A < 0, ratio below 1 - eps: clipped at -A (1 - eps), no gradient
        (-1.0, 1.5, 1.5, 1.5, 0.0),  # A < 0, ratio above 1 + eps: unclipped, d/dlogp = -A ratio
    ],
)
def test_policy_loss_clipping_directions(advantage, ratio, loss, grad, clipfrac) -> None:
    """The pessimistic max picks the clipped term only where it removes the incentive to move further."""
    old = t([-1.0])
    logps = (old + math.log(ratio)).requires_grad_(True)
    got, stats = ppo_policy_loss(logps, old, t([advantage]), torch.tensor([True]), EPS)
    got.backward()
    assert got.item() == pytest.approx(loss)
    assert logps.grad.item() == pytest.approx(grad)
    assert stats["clipfrac"].item() == clipfrac
    assert stats["ratio"].item() == pytest.approx(ratio)


def test_policy_loss_and_statistics_on_a_masked_batch() -> None:
    """Loss, clipfrac, approxkl = 0.5 mean(log_ratio^2), mean ratio and its variance over the masked tokens only."""
    log_ratios = [[0.1, -0.3, 0.25], [0.0, 0.5, 9.0]]
    adv = [[1.0, -2.0, 0.5], [3.0, 1.0, 1.0]]
    mask = [[True, True, True], [True, False, False]]
    old = t([[-1.0, -2.0, -0.5], [-0.7, -1.1, -3.0]])
    logps = old + t(log_ratios)
    loss, stats = ppo_policy_loss(logps, old, t(adv), torch.tensor(mask), EPS)

    kept = [(0.1, 1.0), (-0.3, -2.0), (0.25, 0.5), (0.0, 3.0)]
    ratios = [math.exp(lr) for lr, _ in kept]
    terms = [max(-a * r, -a * min(max(r, 1 - EPS), 1 + EPS)) for r, (_, a) in zip(ratios, kept)]
    # By hand: -1.10517, max(1.48164, 1.6) = 1.6, max(-0.64201, -0.6) = -0.6, -3.
    assert terms == pytest.approx([-math.exp(0.1), 1.6, -0.6, -3.0])
    assert loss.item() == pytest.approx(sum(terms) / 4)
    assert loss.item() == pytest.approx((-math.exp(0.1) + 1.6 - 0.6 - 3.0) / 4)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approxkl"].item() == pytest.approx(0.5 * (0.01 + 0.09 + 0.0625 + 0.0) / 4)
    mean_ratio = sum(ratios) / 4
    assert stats["ratio"].item() == pytest.approx(mean_ratio)
    assert stats["ratio_var"].item() == pytest.approx(sum((r - mean_ratio) ** 2 for r in ratios) / 4)
    assert not any(v.requires_grad for v in stats.values())


# ---- PPO value loss -----------------------------------------------------------------------------------------


def test_value_loss_takes_the_larger_of_clipped_and_unclipped() -> None:
    """0.5 mean max((V - G)^2, (V_clip - G)^2); where the clipped error is larger the element has no gradient."""
    values = t([1.0, 0.6, 0.0, 1.0, 5.0]).requires_grad_(True)
    old = t([0.5, 0.5, 0.5, 0.5, 0.0])
    returns = t([1.2, 2.0, -1.0, 0.0, -5.0])
    mask = torch.tensor([True, True, True, True, False])
    loss, clipfrac = ppo_value_loss(values, old, returns, mask, 0.2)
    loss.backward()
    # V_clip = 0.7, 0.6, 0.3, 0.7: errors (0.04 vs 0.25), (1.96 vs 1.96), (1 vs 1.69), (1 vs 0.49).
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.96 + 1.69 + 1.0) / 4)
    assert clipfrac.item() == pytest.approx(0.5)  # elements 1 and 3 take the clipped error
    # d/dV of 0.5 * (V - G)^2 / 4 = (V - G) / 4 where the unclipped term is used, 0 where the clip saturates.
    assert values.grad.tolist() == pytest.approx([0.0, (0.6 - 2.0) / 4, 0.0, 1.0 / 4, 0.0])


def test_value_loss_without_clipping() -> None:
    """When every new value is within eps of the old one, the loss is plain 0.5 MSE and clipfrac 0."""
    values, old, returns = t([0.1, -0.4]), t([0.0, -0.5]), t([1.0, 0.5])
    loss, clipfrac = ppo_value_loss(values, old, returns, torch.tensor([True, True]), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.81 + 0.81) / 2)
    assert clipfrac.item() == 0.0


# ---- entropy, KL controller ---------------------------------------------------------------------------------


def test_entropy_of_uniform_logits_is_log_v() -> None:
    for vocab in (2, 5, 512):
        for shift in (0.0, 3.0):
            assert entropy_from_logits(torch.full((2, vocab), shift)).tolist() == pytest.approx([math.log(vocab)] * 2)


def test_entropy_with_minus_inf_logits_is_finite() -> None:
    """Masked (-inf) tokens have probability 0 and contribute nothing, not NaN."""
    inf = float("-inf")
    logits = torch.tensor([[0.0, math.log(3.0), inf, inf], [2.0, inf, inf, inf]])
    got = entropy_from_logits(logits)
    assert torch.isfinite(got).all()
    # p = (1/4, 3/4, 0, 0) and a one-hot distribution.
    assert got.tolist() == pytest.approx([-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), 0.0], abs=1e-6)
    assert entropy_from_logits(torch.tensor([[0.0, 0.0, inf]], dtype=torch.bfloat16)).item() == pytest.approx(
        math.log(2), abs=1e-6
    )


def test_entropy_gradient_with_minus_inf_logits_is_finite() -> None:
    """The PPO loss differentiates the entropy when entropy_coef > 0; -inf logits should not poison the gradient."""
    logits = torch.tensor([[0.0, 1.0, float("-inf")]], requires_grad=True)
    entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("kl", "n_steps", "expected"),
    [
        (5.5, 10, 0.1 * (1 + 0.1 * 10 / 100)),  # error 0.1 -> 0.101
        (4.0, 10, 0.1 * (1 - 0.2 * 10 / 100)),  # error -0.2 exactly -> 0.098
        (5.0, 50, 0.1),  # on target: unchanged
        (50.0, 100, 0.1 * 1.2),  # error 9 clipped to 0.2, a whole horizon -> 0.12
        (0.0, 100, 0.1 * 0.8),  # error -1 clipped to -0.2 -> 0.08
        (6.0, 25, 0.1 * (1 + 0.2 * 25 / 100)),  # error 0.2 -> 0.105
    ],
)
def test_adaptive_kl_coef(kl, n_steps, expected) -> None:
    """coef * (1 + clip(kl / target - 1, +-0.2) * n_steps / horizon), target 5 and horizon 100."""
    assert adaptive_kl_coef(0.1, kl, target=5.0, horizon=100, n_steps=n_steps) == pytest.approx(expected)


def test_truncated_is_weights_by_hand() -> None:
    """min(pi_train / pi_rollout, cap) per token, 1 off the mask, no gradient; mean and truncated share over the
    mask."""
    train = torch.log(t([[0.5, 0.2, 0.3], [0.3, 0.6, 0.05]])).requires_grad_(True)
    rollout = torch.log(t([[0.25, 0.4, 0.3], [0.1, 0.6, 0.5]]))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    weights, stats = truncated_is_weights(train, rollout, mask, cap=2.0)
    # ratios: 2, 0.5, 1 / 3 -> 2, 1 / (masked: 0.1 -> 1)
    torch.testing.assert_close(weights, t([[2.0, 0.5, 1.0], [2.0, 1.0, 1.0]]), check_dtype=False)
    assert not weights.requires_grad
    assert stats["rollout/tis_weight_mean"].item() == pytest.approx((2 + 0.5 + 1 + 2 + 1) / 5)
    assert stats["rollout/tis_truncated_frac"].item() == pytest.approx(1 / 5)  # only the 3 exceeds the cap


def test_policy_loss_weights_scale_each_tokens_term() -> None:
    """With weights the loss is the masked mean of weight * max(-A r, -A clip(r)); its gradient scales alike."""
    old = t([[-1.0, -2.0], [-0.5, -0.7]])
    logps = (old + t([[0.1, -0.3], [0.0, 0.0]])).requires_grad_(True)
    adv, mask = t([[1.0, -2.0], [3.0, 5.0]]), torch.tensor([[True, True], [True, False]])
    weights = t([[2.0, 0.5], [1.0, 7.0]])
    loss, _ = ppo_policy_loss(logps, old, adv, mask, EPS, weights)
    terms = [-math.exp(0.1) * 2.0, max(-(-2.0) * math.exp(-0.3), 2.0 * (1 - EPS)) * 0.5, -3.0 * 1.0]
    assert loss.item() == pytest.approx(sum(terms) / 3)
    loss.backward()
    assert logps.grad[0, 0].item() == pytest.approx(-math.exp(0.1) * 2.0 / 3)
    assert logps.grad[1, 1].item() == 0.0
