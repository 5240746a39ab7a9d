"""Loss functions (next-token, sequence log-probs, Bradley-Terry, DPO family, ORPO) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lit_llm.losses import (
    IGNORE_INDEX,
    bradley_terry_loss,
    dpo_loss,
    log_odds,
    next_token_loss,
    orpo_loss,
    prefix_lm_targets,
    sequence_logps,
    token_logps,
)

# (B=1, T=3, V=3) logits and their targets.
LOGITS = [[[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.5, 1.5, 0.2]]]
TARGETS = [[0, 1, 2]]


def nll(row: list[float], target: int) -> float:
    """-log softmax(row)[target], by hand."""
    return -(row[target] - math.log(sum(math.exp(x) for x in row)))


def test_next_token_loss_matches_hand_computation():
    expected = sum(nll(LOGITS[0][t], TARGETS[0][t]) for t in range(3)) / 3
    # By hand, first term: -(2 - log(e^2 + e^0.5 + e^-1)) = 0.24131...
    assert nll(LOGITS[0][0], 0) == pytest.approx(0.241311, abs=1e-5)
    loss = next_token_loss(torch.tensor(LOGITS), torch.tensor(TARGETS))
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_next_token_loss_batched_and_upcasts_low_precision_logits():
    logits = torch.tensor(LOGITS * 2)  # B=2
    targets = torch.tensor([[0, 1, 2], [2, 2, 1]])
    expected = sum(nll(LOGITS[0][t], targets[b, t].item()) for b in range(2) for t in range(3)) / 6
    assert next_token_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    low = next_token_loss(logits.to(torch.bfloat16), targets)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(expected, rel=2e-2)


def test_ignored_positions_are_excluded_from_the_mean():
    targets = torch.tensor([[0, IGNORE_INDEX, 2]])
    expected = (nll(LOGITS[0][0], 0) + nll(LOGITS[0][2], 2)) / 2  # divided by 2, not 3
    assert next_token_loss(torch.tensor(LOGITS), targets).item() == pytest.approx(expected, rel=1e-6)
    assert IGNORE_INDEX == -100


def test_custom_ignore_index():
    targets = torch.tensor([[0, 1, 2]])
    expected = (nll(LOGITS[0][0], 0) + nll(LOGITS[0][2], 2)) / 2
    loss = next_token_loss(torch.tensor(LOGITS), targets, ignore_index=1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sum_reduction_is_mean_times_counted_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    targets[0, :2] = IGNORE_INDEX
    targets[1, 4] = IGNORE_INDEX
    counted = 10 - 3
    mean = next_token_loss(logits, targets)
    total = next_token_loss(logits, targets, reduction="sum")
    assert total.item() == pytest.approx(mean.item() * counted, rel=1e-5)
    by_hand = sum(
        nll(logits[b, t].tolist(), targets[b, t].item()) for b in range(2) for t in range(5) if targets[b, t] >= 0
    )
    assert total.item() == pytest.approx(by_hand, rel=1e-5)


def test_prefix_lm_targets_masks_exactly_the_first_k_positions():
    targets = torch.tensor([[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]])
    original = targets.clone()
    out = prefix_lm_targets(targets, 2)
    assert out.tolist() == [[-100, -100, 7, 8, 9], [-100, -100, 3, 4, 0]]
    assert torch.equal(targets, original)  # input untouched
    assert prefix_lm_targets(targets, 0).tolist() == original.tolist()
    assert prefix_lm_targets(targets, 5).tolist() == [[-100] * 5] * 2


def test_prefix_lm_loss_only_counts_after_the_prefix():
    logits = torch.tensor(LOGITS)
    targets = prefix_lm_targets(torch.tensor(TARGETS), 1)
    expected = (nll(LOGITS[0][1], 1) + nll(LOGITS[0][2], 2)) / 2
    assert next_token_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


# ---- sequence log-probabilities ---------------------------------------------------------------------

# (B=2, T=3, V=3) logits; row 0 ignores its middle position, row 1 its last.
SEQ_LOGITS = [
    [[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [1.5, 1.5, 0.2]],
    [[-0.3, 0.8, 0.1], [1.0, -2.0, 0.5], [0.0, 0.0, 4.0]],
]
SEQ_TARGETS = [[0, IGNORE_INDEX, 2], [1, 2, IGNORE_INDEX]]


def logp(row: list[float], target: int) -> float:
    """log softmax(row)[target], by hand."""
    return row[target] - math.log(sum(math.exp(x) for x in row))


def test_token_logps_are_log_softmax_at_targets_and_zero_where_ignored():
    """token_logps[b, t] = log softmax(logits[b, t])[target[b, t]], 0 at IGNORE_INDEX."""
    out = token_logps(torch.tensor(SEQ_LOGITS), torch.tensor(SEQ_TARGETS))
    assert out.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            target = SEQ_TARGETS[b][t]
            expected = 0.0 if target == IGNORE_INDEX else logp(SEQ_LOGITS[b][t], target)
            assert out[b, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_sequence_logps_sum_and_per_token_mean():
    """sum_t log p(y_t) over non-ignored targets; with average=True divided by the number of targets."""
    row0 = logp(SEQ_LOGITS[0][0], 0) + logp(SEQ_LOGITS[0][2], 2)
    row1 = logp(SEQ_LOGITS[1][0], 1) + logp(SEQ_LOGITS[1][1], 2)
    # Anchor: log softmax([2, .5, -1])[0] = 2 - log(e^2 + e^.5 + e^-1) = -0.241311
    assert logp(SEQ_LOGITS[0][0], 0) == pytest.approx(-0.241311, abs=1e-5)
    logits, targets = torch.tensor(SEQ_LOGITS), torch.tensor(SEQ_TARGETS)
    total = sequence_logps(logits, targets)
    assert total.shape == (2,)
    assert total.tolist() == pytest.approx([row0, row1], rel=1e-5)
    mean = sequence_logps(logits, targets, average=True)
    assert mean.tolist() == pytest.approx([row0 / 2, row1 / 2], rel=1e-5)


def test_sequence_logps_row_without_targets_is_zero():
    """A row whose targets are all IGNORE_INDEX gives 0 (sum and mean; no division by zero)."""
    logits = torch.tensor(SEQ_LOGITS)
    targets = torch.tensor([[IGNORE_INDEX] * 3, [1, 2, IGNORE_INDEX]])
    row1 = logp(SEQ_LOGITS[1][0], 1) + logp(SEQ_LOGITS[1][1], 2)
    total = sequence_logps(logits, targets)
    mean = sequence_logps(logits, targets, average=True)
    assert total[0].item() == 0.0
    assert mean[0].item() == 0.0
    assert total[1].item() == pytest.approx(row1, rel=1e-5)
    assert mean[1].item() == pytest.approx(row1 / 2, rel=1e-5)


def test_sequence_logps_ignored_positions_do_not_contribute_even_with_extreme_logits():
    """Logits at ignored positions (here +-1e4) leave the result equal to the hand sum over counted ones."""
    extreme = [row[:] for row in SEQ_LOGITS]
    extreme[0][1] = [1e4, -1e4, 0.0]  # row 0 position 1 is ignored
    extreme[1][2] = [-1e4, 0.0, 1e4]  # row 1 position 2 is ignored
    row0 = logp(SEQ_LOGITS[0][0], 0) + logp(SEQ_LOGITS[0][2], 2)
    row1 = logp(SEQ_LOGITS[1][0], 1) + logp(SEQ_LOGITS[1][1], 2)
    targets = torch.tensor(SEQ_TARGETS)
    total = sequence_logps(torch.tensor(extreme), targets)
    assert torch.isfinite(total).all()
    assert total.tolist() == pytest.approx([row0, row1], rel=1e-5)
    mean = sequence_logps(torch.tensor(extreme), targets, average=True)
    assert mean.tolist() == pytest.approx([row0 / 2, row1 / 2], rel=1e-5)


# ---- reward modelling -------------------------------------------------------------------------------


def log_sigmoid(x: float) -> float:
    """log(1 / (1 + e^-x)), by hand."""
    return -math.log1p(math.exp(-x))


def test_bradley_terry_loss_literal_anchor():
    """rc=1, rr=0: -log sigmoid(1) = log(1 + e^-1) = 0.313262."""
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.313262, rel=1e-5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_bradley_terry_loss_is_mean_negative_log_sigmoid_of_reward_gap():
    """mean_i -log sigmoid(rc_i - rr_i)."""
    rc, rr = [1.0, -0.5, 2.0], [0.0, 0.5, -1.0]
    expected = sum(-log_sigmoid(c - r) for c, r in zip(rc, rr)) / 3
    loss = bradley_terry_loss(torch.tensor(rc), torch.tensor(rr))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_bradley_terry_loss_with_margin():
    """mean_i -log sigmoid(rc_i - rr_i - m_i) (Llama 2 margin loss)."""
    rc, rr, m = [1.0, -0.5, 2.0], [0.0, 0.5, -1.0], [0.5, 0.0, 3.0]
    expected = sum(-log_sigmoid(c - r - mi) for c, r, mi in zip(rc, rr, m)) / 3
    loss = bradley_terry_loss(torch.tensor(rc), torch.tensor(rr), margin=torch.tensor(m))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # Pair 3 with margin 3 on a gap of 3 is log 2, as if the rewards were tied.
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([-1.0]), margin=torch.tensor([3.0])).item() == (
        pytest.approx(math.log(2), rel=1e-6)
    )


def test_bradley_terry_loss_with_center_coef():
    """mean_i -log sigmoid(rc_i - rr_i) + coef * mean_i (rc_i + rr_i)^2."""
    rc, rr, coef = [1.0, -0.5, 2.0], [0.0, 0.5, -1.0], 0.01
    bt = sum(-log_sigmoid(c - r) for c, r in zip(rc, rr)) / 3
    center = sum((c + r) ** 2 for c, r in zip(rc, rr)) / 3  # (1 + 0 + 1) / 3
    loss = bradley_terry_loss(torch.tensor(rc), torch.tensor(rr), center_coef=coef)
    assert loss.item() == pytest.approx(bt + coef * center, rel=1e-5)
    # Literal: rc=1, rr=0, coef=0.5 -> 0.313262 + 0.5 * 1 = 0.813262
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), center_coef=0.5).item() == (
        pytest.approx(0.813262, rel=1e-5)
    )


# ---- direct preference optimization -----------------------------------------------------------------

# (B=3,) sequence log-probs under the policy and the reference.
PC, PR = [-10.0, -12.5, -7.0], [-11.0, -11.0, -9.5]
RC, RR = [-10.5, -12.0, -8.0], [-10.5, -11.5, -9.0]


def margins() -> list[float]:
    """h = (pc - rc) - (pr - rr) per pair, by hand."""
    return [(pc - rc) - (pr - rr) for pc, pr, rc, rr in zip(PC, PR, RC, RR)]


def run_dpo(**kwargs):
    return dpo_loss(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR), **kwargs)


def test_dpo_sigmoid_loss():
    """DPO: -log sigmoid(beta * h)."""
    beta = 0.1
    losses, _, _ = run_dpo(beta=beta, loss_type="sigmoid")
    assert losses.shape == (3,)
    assert losses.tolist() == pytest.approx([-log_sigmoid(beta * h) for h in margins()], rel=1e-5)
    # Anchors: h = 0.5 - (-0.5), -0.5 - 0.5, 1 - (-0.5); and -log sigmoid(0.1) = log(1 + e^-0.1) = 0.644397.
    assert margins() == pytest.approx([1.0, -1.0, 1.5])
    assert losses[0].item() == pytest.approx(0.644397, rel=1e-5)


def test_dpo_sigmoid_loss_with_label_smoothing_is_cdpo():
    """cDPO: -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)."""
    beta, e = 0.5, 0.2
    losses, _, _ = run_dpo(beta=beta, loss_type="sigmoid", label_smoothing=e)
    expected = [-(1 - e) * log_sigmoid(beta * h) - e * log_sigmoid(-beta * h) for h in margins()]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


def test_dpo_robust_loss_is_rdpo():
    """rDPO: (-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)) / (1 - 2e)."""
    beta, e = 0.5, 0.2
    losses, _, _ = run_dpo(beta=beta, loss_type="robust", label_smoothing=e)
    expected = [(-(1 - e) * log_sigmoid(beta * h) + e * log_sigmoid(-beta * h)) / (1 - 2 * e) for h in margins()]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    # With e = 0 it is plain DPO.
    plain, _, _ = run_dpo(beta=beta, loss_type="robust")
    assert plain.tolist() == pytest.approx([-log_sigmoid(beta * h) for h in margins()], rel=1e-5)


def test_dpo_hinge_loss_is_slic():
    """SLiC: max(0, 1 - beta h)."""
    beta = 0.8  # beta * h = 0.8, -0.8, 1.2 -> 0.2, 1.8, 0
    losses, _, _ = run_dpo(beta=beta, loss_type="hinge")
    expected = [max(0.0, 1 - beta * h) for h in margins()]
    assert expected == pytest.approx([0.2, 1.8, 0.0])
    assert losses.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_dpo_ipo_loss():
    """IPO: (h - 1 / (2 beta))^2."""
    beta = 0.25  # 1 / (2 beta) = 2 -> (1-2)^2, (-1-2)^2, (1.5-2)^2 = 1, 9, 0.25
    losses, _, _ = run_dpo(beta=beta, loss_type="ipo")
    expected = [(h - 1 / (2 * beta)) ** 2 for h in margins()]
    assert expected == pytest.approx([1.0, 9.0, 0.25])
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust"])
def test_dpo_rewards_are_beta_times_log_ratio_and_detached(loss_type):
    """chosen_rewards = beta (pc - rc), rejected_rewards = beta (pr - rr), with no grad even if inputs need it."""
    beta = 0.3
    inputs = [torch.tensor(x, requires_grad=True) for x in (PC, PR, RC, RR)]
    losses, chosen, rejected = dpo_loss(*inputs, beta=beta, loss_type=loss_type, label_smoothing=0.1)
    assert chosen.tolist() == pytest.approx([beta * (pc - rc) for pc, rc in zip(PC, RC)], rel=1e-5)
    assert rejected.tolist() == pytest.approx([beta * (pr - rr) for pr, rr in zip(PR, RR)], rel=1e-5)
    assert not chosen.requires_grad
    assert not rejected.requires_grad
    assert losses.requires_grad


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 5.0])
def test_dpo_losses_when_policy_equals_reference(beta):
    """h = 0: sigmoid -log sigmoid(0) = ln 2, IPO (1 / (2 beta))^2, hinge max(0, 1) = 1; rewards 0."""
    logps = torch.tensor([-3.0, -20.0])
    other = torch.tensor([-5.0, -1.0])
    for loss_type, expected in [("sigmoid", math.log(2)), ("ipo", (1 / (2 * beta)) ** 2), ("hinge", 1.0)]:
        losses, chosen, rejected = dpo_loss(logps, other, logps.clone(), other.clone(), beta=beta, loss_type=loss_type)
        assert losses.tolist() == pytest.approx([expected, expected], rel=1e-6)
        assert chosen.tolist() == [0.0, 0.0]
        assert rejected.tolist() == [0.0, 0.0]
    # Label smoothing leaves the tied-pair sigmoid loss at ln 2 too: -(1-e) ln(1/2) - e ln(1/2).
    losses, _, _ = dpo_loss(logps, other, logps, other, beta=beta, loss_type="sigmoid", label_smoothing=0.3)
    assert losses.tolist() == pytest.approx([math.log(2)] * 2, rel=1e-6)


def test_dpo_rejects_unknown_loss_type_and_bad_label_smoothing():
    """loss_type outside sigmoid|ipo|hinge|robust and label_smoothing outside [0, 0.5) raise ValueError."""
    with pytest.raises(ValueError):
        run_dpo(loss_type="kto")
    for e in (0.5, 0.7, 1.0, -0.1):
        with pytest.raises(ValueError):
            run_dpo(loss_type="robust", label_smoothing=e)
        with pytest.raises(ValueError):
            run_dpo(loss_type="sigmoid", label_smoothing=e)


def test_dpo_sigmoid_gradient_raises_chosen_and_lowers_rejected():
    """d/d pc of -log sigmoid(beta h) = -beta sigmoid(-beta h) < 0; d/d pr = +beta sigmoid(-beta h) > 0."""
    beta = 0.1
    pc = torch.tensor(PC, requires_grad=True)
    pr = torch.tensor(PR, requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.tensor(RC), torch.tensor(RR), beta=beta, loss_type="sigmoid")
    losses.sum().backward()
    expected = [-beta / (1 + math.exp(beta * h)) for h in margins()]  # -beta * sigmoid(-beta h)
    assert (pc.grad < 0).all()
    assert (pr.grad > 0).all()
    assert pc.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert pr.grad.tolist() == pytest.approx([-g for g in expected], rel=1e-5)


# ---- odds-ratio preference optimization -------------------------------------------------------------


def hand_log_odds(lp: float) -> float:
    """log(p / (1 - p)) with p = e^lp, by hand."""
    return lp - math.log(1 - math.exp(lp))


def test_log_odds_of_mean_logps():
    """log odds = lp - log(1 - e^lp): p=0.6 -> log 1.5, p=0.3 -> log(3/7), p=0.5 -> 0."""
    lps = [math.log(0.6), math.log(0.3), math.log(0.5), -4.0]
    out = log_odds(torch.tensor(lps))
    assert out.tolist() == pytest.approx([hand_log_odds(lp) for lp in lps], rel=1e-5, abs=1e-6)
    assert out[0].item() == pytest.approx(math.log(1.5), rel=1e-5)
    assert out[1].item() == pytest.approx(math.log(3 / 7), rel=1e-5)
    assert out[2].item() == pytest.approx(0.0, abs=1e-6)


def test_log_odds_keeps_precision_and_gradient_as_p_nears_one():
    """Near p = 1, log(1 - e^x) must come from expm1: log1p(-exp(-1e-5)) in fp32 is off by ~1e-4 relative, and a
    clamp at p = 1 - 1e-6 flattened the gradient (d/dx log odds = 1 / (1 - e^x) ~ -1/x) below x = -1e-6."""
    xs = [-1e-5, -1e-7, -0.6, -0.7, -20.0]
    x = torch.tensor(xs, requires_grad=True)
    out = log_odds(x)
    out.sum().backward()
    exact = [v - math.log(-math.expm1(v)) for v in xs]
    assert out.tolist() == pytest.approx(exact, rel=1e-6)
    assert x.grad.tolist() == pytest.approx([1 / -math.expm1(v) for v in xs], rel=1e-4)
    p_one = torch.tensor([0.0], requires_grad=True)  # p = 1 exactly: finite, not nan
    log_odds(p_one).sum().backward()
    assert torch.isfinite(p_one.grad).all()


def test_orpo_loss_single_pair():
    """p_c = 0.6, p_r = 0.3: odds 1.5 and 3/7, log odds ratio log 3.5; loss = nll - beta log sigmoid(log 3.5)."""
    beta, nll_c = 0.1, 1.25
    loss, ratio, difference = orpo_loss(
        torch.tensor([math.log(0.6)]), torch.tensor([math.log(0.3)]), torch.tensor(nll_c), beta=beta
    )
    diff = math.log(3.5)
    assert hand_log_odds(math.log(0.6)) - hand_log_odds(math.log(0.3)) == pytest.approx(diff, rel=1e-12)
    # log sigmoid(log 3.5) = log(3.5 / 4.5) = log(7 / 9)
    assert log_sigmoid(diff) == pytest.approx(math.log(7 / 9), rel=1e-12)
    assert difference.tolist() == pytest.approx([diff], rel=1e-5)
    assert ratio.tolist() == pytest.approx([math.log(7 / 9)], rel=1e-5)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(nll_c - beta * math.log(7 / 9), rel=1e-5)  # 1.25 + 0.1 * 0.251314


def test_orpo_loss_batch_mean_and_detached_outputs():
    """loss = nll - beta * mean_i log sigmoid(log odds c_i - log odds r_i); ratio, difference per pair, detached."""
    beta, nll_c = 0.5, 2.0
    chosen = [math.log(0.6), -0.9, -2.5]
    rejected = [math.log(0.3), -1.2, -1.0]
    diffs = [hand_log_odds(c) - hand_log_odds(r) for c, r in zip(chosen, rejected)]
    ratios = [log_sigmoid(d) for d in diffs]
    c_t = torch.tensor(chosen, requires_grad=True)
    r_t = torch.tensor(rejected, requires_grad=True)
    loss, ratio, difference = orpo_loss(c_t, r_t, torch.tensor(nll_c), beta=beta)
    assert difference.tolist() == pytest.approx(diffs, rel=1e-5)
    assert ratio.tolist() == pytest.approx(ratios, rel=1e-5)
    assert loss.item() == pytest.approx(nll_c - beta * sum(ratios) / 3, rel=1e-5)
    assert not ratio.requires_grad
    assert not difference.requires_grad
    loss.backward()
    # Raising a chosen log-prob lowers the loss; raising a rejected one raises it.
    assert (c_t.grad < 0).all()
    assert (r_t.grad > 0).all()
