"""Critic-free RL tensor math (`lit_llm.rlvr`) against numbers worked out by hand: GRPO / RLOO / REINFORCE++
advantages (with skipped rewards), the four loss aggregations and their micro-batch accumulation, the clipped
surrogate with clip-higher and dual clip (values, maps and which tokens carry a gradient), GSPO's sequence-level
ratio, DAPO's overlong penalty, and which groups dynamic sampling keeps."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lit_llm.rlvr import (
    aggregate,
    clipped_surrogate,
    grpo_advantages,
    importance_log_ratio,
    informative_groups,
    overlong_penalty,
    reinforce_pp_advantages,
    rloo_advantages,
)


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def b(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# ---- GRPO ---------------------------------------------------------------------------------------------------

# Two groups of 4: group 0 has mean 0.5, deviations +-0.5, unbiased var (4 * 0.25) / 3 = 1/3; group 1 is constant.
SCORES = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5]
EPS = 1e-4


def test_grpo_group_scaling_divides_by_the_group_std() -> None:
    got = grpo_advantages(t(SCORES), 4, "group", eps=EPS).tolist()
    a = 0.5 / (math.sqrt(1 / 3) + EPS)
    assert got == pytest.approx([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0], rel=1e-12, abs=1e-15)
    assert got[4:] == [0.0, 0.0, 0.0, 0.0]  # the constant group: exactly 0


def test_grpo_batch_scaling_divides_by_the_batch_std() -> None:
    """Batch of 8: sum 4, mean 0.5, sum of squares 1 + 1 + 4 * 0.25 = 3, unbiased var (3 - 8 * 0.25) / 7 = 1/7.
    Centering stays per group."""
    got = grpo_advantages(t(SCORES), 4, "batch", eps=EPS).tolist()
    a = 0.5 / (math.sqrt(1 / 7) + EPS)
    assert got == pytest.approx([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0], rel=1e-12, abs=1e-15)


def test_grpo_batch_scaling_reduces_the_statistics_across_ranks() -> None:
    """A `reduce` that doubles the sums (two identical ranks): 16 scores, sum 8, squares 6, var (6 - 16/4) / 15."""
    got = grpo_advantages(t(SCORES), 4, "batch", reduce=lambda x: 2 * x, eps=EPS).tolist()
    a = 0.5 / (math.sqrt(2 / 15) + EPS)
    assert got[:4] == pytest.approx([a, -a, -a, a], rel=1e-12)


def test_grpo_no_scaling_only_centres() -> None:
    got = grpo_advantages(t(SCORES), 4, "none").tolist()
    assert got == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_grpo_unknown_scaling_and_ragged_groups_are_errors() -> None:
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none"):
        grpo_advantages(t(SCORES), 4, "rank")
    with pytest.raises(ValueError, match="8 rewards do not split into groups of 3"):
        grpo_advantages(t(SCORES), 3)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("eps", [1e-4, 1e-30])
@pytest.mark.parametrize("value", [0.5, 0.1, 0.7, 1 / 3])
def test_grpo_equal_rewards_give_exactly_zero_float32(scale: str, eps: float, value: float) -> None:
    """Equal rewards in float32 (how the stage holds them): 0 exactly, never NaN, even with a tiny eps (the
    std is 0, so 0 / eps)."""
    got = grpo_advantages(torch.full((6,), value), 3, scale, eps=eps)
    assert got.tolist() == [0.0] * 6



def test_grpo_equal_rewards_give_exactly_zero_float64() -> None:
    """[0.1] * 3 in float64: the group mean is (0.1 + 0.1 + 0.1) / 3 = 0.30000000000000004 / 3, one ulp above 0.1,
    so r - mean is -1.4e-17 and the std is about 1.7e-17; with a tiny eps the advantage is about -0.8, not 0."""
    got = grpo_advantages(t([0.1, 0.1, 0.1]), 3, "group", eps=1e-30)
    assert got.tolist() == [0.0, 0.0, 0.0]


def test_grpo_valid_mask_takes_statistics_over_the_rest() -> None:
    """Group 0 = [2, 0, 1, *] with the 4th skipped: mean of [2, 0, 1] = 1, unbiased var (1 + 1 + 0) / 2 = 1.
    The skipped answer gets 0, and its score (5 or 100) changes nothing."""
    valid = b([True, True, True, False, True, True, True, True])
    for skipped in (5.0, 100.0):
        scores = t([2.0, 0.0, 1.0, skipped, 0.5, 0.5, 0.5, 0.5])
        got = grpo_advantages(scores, 4, "group", valid=valid, eps=EPS).tolist()
        a = 1.0 / (1.0 + EPS)
        assert got == pytest.approx([a, -a, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], rel=1e-12, abs=1e-15)
        assert got[3] == 0.0
        assert grpo_advantages(scores, 4, "none", valid=valid).tolist() == [1.0, -1.0, 0.0, 0.0, 0, 0, 0, 0]
        # batch std over the 7 valid scores [2, 0, 1, 0.5 x 4]: sum 5, squares 4 + 1 + 1 = 6,
        # var = (6 - 7 * (5/7)^2) / 6 = (6 - 25/7) / 6 = 17/42
        got = grpo_advantages(scores, 4, "batch", valid=valid, eps=EPS).tolist()
        a = 1.0 / (math.sqrt(17 / 42) + EPS)
        assert got == pytest.approx([a, -a, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], rel=1e-12, abs=1e-15)


def test_grpo_a_group_with_one_valid_answer_gets_zero() -> None:
    valid = b([False, True, False, False])
    assert grpo_advantages(t([3.0, 7.0, 1.0, 2.0]), 4, "group", valid=valid, eps=1e-30).tolist() == [0.0] * 4


# ---- RLOO ---------------------------------------------------------------------------------------------------


def test_rloo_leave_one_out_baseline() -> None:
    """[1, 0, 0, 0]: the 1 is compared with mean(0, 0, 0) = 0, each 0 with mean(1, 0, 0) = 1/3.
    [0.5, 1, 0, 0.5]: baselines (1 + 0 + 0.5)/3 = 0.5, (0.5 + 0 + 0.5)/3 = 1/3, (0.5 + 1 + 0.5)/3 = 2/3, 0.5."""
    got = rloo_advantages(t([1.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.5]), 4).tolist()
    expected = [1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 1 - 1 / 3, 0 - 2 / 3, 0.0]
    assert got == pytest.approx(expected, abs=1e-12)
    assert sum(got[:4]) == pytest.approx(0.0, abs=1e-12)
    assert sum(got[4:]) == pytest.approx(0.0, abs=1e-12)


def test_rloo_sums_to_zero_in_every_full_group() -> None:
    scores = t([0.3, 2.5, -1.0, 0.7, 4.0, 4.5, 0.0, 1.0, 9.0])
    got = rloo_advantages(scores, 3).tolist()
    for g in range(3):
        assert sum(got[3 * g : 3 * g + 3]) == pytest.approx(0.0, abs=1e-12)
    # group 0 by hand: 0.3 - (2.5 - 1)/2 = -0.45, 2.5 - (0.3 - 1)/2 = 2.85, -1 - (0.3 + 2.5)/2 = -2.4
    assert got[:3] == pytest.approx([-0.45, 2.85, -2.4], abs=1e-12)


def test_rloo_valid_mask() -> None:
    """Group 0 = [3, 1, 2, skipped]: baselines (1 + 2)/2, (3 + 2)/2, (3 + 1)/2 -> 1.5, -1.5, 0 and 0 for the skipped.
    Group 1 has one valid answer: nothing to compare it with, so all 0."""
    scores = t([3.0, 1.0, 2.0, 6.0, 4.0, 7.0, 1.0, 2.0])
    valid = b([True, True, True, False, False, True, False, False])
    got = rloo_advantages(scores, 4, valid).tolist()
    assert got == pytest.approx([1.5, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], abs=1e-12)
    assert got[3:] == [0.0] * 5


# ---- REINFORCE++ ----------------------------------------------------------------------------------------------

# Four answers of lengths 3, 2, 4, 1 (padding KL values are large, to show they never count).
MASK = [
    [True, True, True, False],
    [True, True, False, False],
    [True, True, True, True],
    [True, False, False, False],
]
KL = [
    [0.5, -0.2, 1.0, 9.0],
    [0.3, 0.1, 7.0, 7.0],
    [0.0, 0.2, -0.4, 0.6],
    [1.0, 5.0, 5.0, 5.0],
]
PP_SCORES = [1.0, 0.0, 0.5, 2.0]
BETA = 0.5


def whiten_by_hand(rows: list[list[float]]) -> list[list[float]]:
    """(x - mean) / sqrt(var + 1e-8) with the mean and unbiased variance of the listed returns."""
    flat = [x for row in rows for x in row]
    mean, var = statistics.mean(flat), statistics.variance(flat)
    return [[(x - mean) / math.sqrt(var + 1e-8) for x in row] for row in rows]


def check_pp(got: torch.Tensor, lengths: list[int], expected_rows: list[list[float]]) -> None:
    for row, n, expected in zip(got.tolist(), lengths, expected_rows):
        assert row[:n] == pytest.approx(expected, abs=1e-9)
        assert row[n:] == [0.0] * (len(row) - n)  # padding


def test_reinforce_pp_returns_to_go_whitened() -> None:
    """Per-token reward -0.5 * kl, the score added at the last token, summed to the end:
    row 0: [-0.25, 0.1, -0.5 + 1] -> returns [0.35, 0.6, 0.5]
    row 1: [-0.15, -0.05 + 0] -> [-0.2, -0.05]
    row 2: [0, -0.1, 0.2, -0.3 + 0.5] -> [0.3, 0.3, 0.4, 0.2]
    row 3: [-0.5 + 2] -> [1.5]"""
    returns = [[0.35, 0.6, 0.5], [-0.2, -0.05], [0.3, 0.3, 0.4, 0.2], [1.5]]
    got = reinforce_pp_advantages(t(PP_SCORES), t(KL), b(MASK), BETA)
    check_pp(got, [3, 2, 4, 1], whiten_by_hand(returns))
    # whitened over the 10 valid tokens: mean 0, unbiased variance 1 (up to the 1e-8 in the denominator)
    flat = got[b(MASK)].tolist()
    assert statistics.mean(flat) == pytest.approx(0.0, abs=1e-12)
    assert statistics.variance(flat) == pytest.approx(1.0, abs=1e-6)


def test_reinforce_pp_baseline_subtracts_the_group_mean() -> None:
    """Groups of 2: scores [1, 0] - 0.5 -> [0.5, -0.5]; [0.5, 2] - 1.25 -> [-0.75, 0.75].
    row 0: [-0.25, 0.1, -0.5 + 0.5] -> [-0.15, 0.1, 0.0]
    row 1: [-0.15, -0.05 - 0.5] -> [-0.7, -0.55]
    row 2: [0, -0.1, 0.2, -0.3 - 0.75] -> [-0.95, -0.95, -0.85, -1.05]
    row 3: [-0.5 + 0.75] -> [0.25]"""
    returns = [[-0.15, 0.1, 0.0], [-0.7, -0.55], [-0.95, -0.95, -0.85, -1.05], [0.25]]
    got = reinforce_pp_advantages(t(PP_SCORES), t(KL), b(MASK), BETA, group_size=2)
    check_pp(got, [3, 2, 4, 1], whiten_by_hand(returns))


def test_reinforce_pp_skipped_answer_takes_no_part() -> None:
    """Answer 3 skipped: its token is 0 and the statistics are those of the other 9 returns."""
    returns = [[0.35, 0.6, 0.5], [-0.2, -0.05], [0.3, 0.3, 0.4, 0.2]]
    got = reinforce_pp_advantages(t(PP_SCORES), t(KL), b(MASK), BETA, valid=b([True, True, True, False]))
    check_pp(got, [3, 2, 4, 0], whiten_by_hand(returns) + [[]])


def test_reinforce_pp_without_kl_whitens_the_scores() -> None:
    """beta = 0: every token of an answer carries its score; rows [1, 1, 1], [0, 0], [0.5 x 4], [2]."""
    returns = [[1.0] * 3, [0.0] * 2, [0.5] * 4, [2.0]]
    got = reinforce_pp_advantages(t(PP_SCORES), t(KL), b(MASK), 0.0)
    check_pp(got, [3, 2, 4, 1], whiten_by_hand(returns))


# ---- loss aggregation -----------------------------------------------------------------------------------------

# Row sums and lengths: 6 over 3 (mean 2), 4 over 1 (mean 4), 6 over 2 (mean 3), 3 over 3 (mean 1); 100 is padding.
PER_TOKEN = [[1.0, 2.0, 3.0], [4.0, 100.0, 100.0], [2.0, 4.0, 100.0], [-3.0, 0.0, 6.0]]
LOSS_MASK = [[True, True, True], [True, False, False], [True, True, False], [True, True, True]]


@pytest.mark.parametrize(
    "loss_type, normalizer, expected",
    [
        ("grpo", None, (2 + 4 + 3 + 1) / 4),
        ("bnpo", None, 19 / 9),
        ("dapo", None, 19 / 9),
        ("dr_grpo", 4 * 3, 19 / 12),  # answers x max completion length
        ("grpo", 8, (2 + 4 + 3 + 1) / 8),
        ("dapo", 20, 19 / 20),
    ],
)
def test_aggregate_by_hand(loss_type: str, normalizer: float | None, expected: float) -> None:
    got = aggregate(t(PER_TOKEN), b(LOSS_MASK), loss_type, normalizer)
    assert got.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "loss_type, normalizer, whole",
    [("grpo", 4, 2.5), ("bnpo", 9, 19 / 9), ("dapo", 9, 19 / 9), ("dr_grpo", 12, 19 / 12)],
)
def test_micro_batches_with_one_normalizer_sum_to_the_batch(loss_type: str, normalizer: float, whole: float) -> None:
    """Rows 0-1 and rows 2-3 as two micro-batches, each divided by the whole batch's normalizer."""
    per_token, mask = t(PER_TOKEN), b(LOSS_MASK)
    halves = [aggregate(per_token[r], mask[r], loss_type, normalizer).item() for r in (slice(0, 2), slice(2, 4))]
    full = aggregate(per_token, mask, loss_type, normalizer).item()
    assert full == pytest.approx(whole, abs=1e-12)
    assert sum(halves) == pytest.approx(whole, abs=1e-12)
    # by hand for the first half: grpo (2 + 4) / 4, token types (6 + 4) / normalizer
    expected_first = 6 / 4 if loss_type == "grpo" else 10 / normalizer
    assert halves[0] == pytest.approx(expected_first, abs=1e-12)


def test_micro_batches_without_a_normalizer_do_not_sum_to_the_batch() -> None:
    """Why the normalizer exists: bnpo halves are 10/4 and 9/5, together 4.3, not 19/9."""
    per_token, mask = t(PER_TOKEN), b(LOSS_MASK)
    halves = [aggregate(per_token[rows], mask[rows], "bnpo").item() for rows in (slice(0, 2), slice(2, 4))]
    assert halves == pytest.approx([10 / 4, 9 / 5], abs=1e-12)


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="dr_grpo divides by answers x max_completion_length"):
        aggregate(t(PER_TOKEN), b(LOSS_MASK), "dr_grpo")
    with pytest.raises(ValueError, match="loss_type must be one of grpo, bnpo, dr_grpo, dapo, got 'sum'"):
        aggregate(t(PER_TOKEN), b(LOSS_MASK), "sum")


# ---- clipped surrogate ----------------------------------------------------------------------------------------

RATIOS = [0.5, 0.9, 1.0, 1.25, 1.5]


def surrogate_inputs(ratios: list[float], advantages: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A leaf (len(advantages), len(ratios)) log-ratio tensor and advantages constant along each row."""
    log_ratio = t([[math.log(r) for r in ratios] for _ in advantages]).requires_grad_(True)
    adv = t([[a] * len(ratios) for a in advantages])
    return log_ratio, adv


def test_clipped_surrogate_with_clip_higher() -> None:
    """eps_low 0.2, eps_high 0.28: the ratio is clipped to [0.8, 1.28].
    A = +1: max(-r, -clip(r)) = [max(-0.5, -0.8), -0.9, -1, -1.25, max(-1.5, -1.28)]
    A = -1: max(r, clip(r)) = [max(0.5, 0.8), 0.9, 1, 1.25, max(1.5, 1.28)]
    1.25 is inside the clip-higher range (it would be clipped at eps 0.2)."""
    log_ratio, adv = surrogate_inputs(RATIOS, [1.0, -1.0])
    loss, maps = clipped_surrogate(log_ratio, adv, 0.2, 0.28)
    assert loss[0].tolist() == pytest.approx([-0.5, -0.9, -1.0, -1.25, -1.28], abs=1e-12)
    assert loss[1].tolist() == pytest.approx([0.8, 0.9, 1.0, 1.25, 1.5], abs=1e-12)
    assert maps["high"].tolist() == [[False, False, False, False, True], [False] * 5]
    assert maps["low"].tolist() == [[False] * 5, [True, False, False, False, False]]
    assert maps["dual"].tolist() == [[False] * 5, [False] * 5]


def test_clipped_surrogate_gradient_is_zero_where_clipping_binds() -> None:
    """d loss / d log r = d loss / d r * r: -A * r on the unclipped branch, 0 on the clipped one.
    A = +1: [-0.5, -0.9, -1, -1.25, 0] (only 1.5 > 1.28 binds); A = -1: [0, 0.9, 1, 1.25, 1.5] (only 0.5 < 0.8)."""
    log_ratio, adv = surrogate_inputs(RATIOS, [1.0, -1.0])
    loss, maps = clipped_surrogate(log_ratio, adv, 0.2, 0.28)
    loss.sum().backward()
    assert log_ratio.grad[0].tolist() == pytest.approx([-0.5, -0.9, -1.0, -1.25, 0.0], abs=1e-12)
    assert log_ratio.grad[1].tolist() == pytest.approx([0.0, 0.9, 1.0, 1.25, 1.5], abs=1e-12)
    binds = maps["low"] | maps["high"]
    assert (log_ratio.grad[binds] == 0).all()
    assert (log_ratio.grad[~binds] != 0).all()


def test_dual_clip_caps_negative_advantages() -> None:
    """delta = 3. A = -1, r = [0.5, 2, 5]: [0.8, 2, min(5, 3)]; A = -2: [1.6, 4, min(10, 6)]; the cap 3 * |A| binds
    only at r = 5 (the `dual` map), where the gradient is then 0. A = +1 is unaffected: [-0.5, -1.28, -1.28]."""
    ratios = [0.5, 2.0, 5.0]
    log_ratio, adv = surrogate_inputs(ratios, [-1.0, -2.0, 1.0])
    loss, maps = clipped_surrogate(log_ratio, adv, 0.2, 0.28, delta=3.0)
    assert loss[0].tolist() == pytest.approx([0.8, 2.0, 3.0], abs=1e-12)
    assert loss[1].tolist() == pytest.approx([1.6, 4.0, 6.0], abs=1e-12)
    assert loss[2].tolist() == pytest.approx([-0.5, -1.28, -1.28], abs=1e-12)
    assert maps["dual"].tolist() == [[False, False, True], [False, False, True], [False, False, False]]
    assert maps["high"].tolist() == [[False] * 3, [False] * 3, [False, True, True]]
    assert maps["low"].tolist() == [[True, False, False], [True, False, False], [False] * 3]
    loss.sum().backward()
    # unclipped A < 0 at r = 2: -A * r = 2 and 4; capped and clipped tokens: 0; A = +1 at r = 0.5: -0.5
    expected = t([[0.0, 2.0, 0.0], [0.0, 4.0, 0.0], [-0.5, 0.0, 0.0]])
    torch.testing.assert_close(log_ratio.grad, expected, rtol=0, atol=1e-12)
    # without delta the A = -1 token at r = 5 costs 5, and positive advantages give the same loss either way
    plain, plain_maps = clipped_surrogate(log_ratio.detach(), adv, 0.2, 0.28)
    assert plain[0, 2].item() == pytest.approx(5.0, abs=1e-12)
    assert plain[2].tolist() == pytest.approx(loss[2].tolist(), abs=1e-12)
    assert not plain_maps["dual"].any()


# ---- importance ratio level -----------------------------------------------------------------------------------

# Row 0: 3 tokens, log ratios [0.5, -1, 0] (mean -1/6); row 1: 2 tokens, [0.3, 0.6] (mean 0.45); padding differs.
LOGPS = [[-1.0, -2.0, -0.5, -9.0], [-0.2, -0.3, 5.0, 5.0]]
OLD_LOGPS = [[-1.5, -1.0, -0.5, 0.0], [-0.5, -0.9, 0.0, 0.0]]
RATIO_MASK = [[True, True, True, False], [True, True, False, False]]


def test_token_level_is_the_difference() -> None:
    got = importance_log_ratio(t(LOGPS), t(OLD_LOGPS), b(RATIO_MASK), "token").tolist()
    assert got[0] == pytest.approx([0.5, -1.0, 0.0, -9.0], abs=1e-12)
    assert got[1] == pytest.approx([0.3, 0.6, 5.0, 5.0], abs=1e-12)


def test_sequence_level_is_the_row_mean_broadcast() -> None:
    got = importance_log_ratio(t(LOGPS), t(OLD_LOGPS), b(RATIO_MASK), "sequence").tolist()
    assert got[0] == pytest.approx([-1 / 6] * 4, abs=1e-12)
    assert got[1] == pytest.approx([0.45] * 4, abs=1e-12)


def test_sequence_level_gradient_is_one_over_length() -> None:
    """d(seq ratio of a row) / d logp_t = 1/len on valid tokens, 0 on padding (and -1/len w.r.t. the old logps)."""
    logps = t(LOGPS).requires_grad_(True)
    old = t(OLD_LOGPS).requires_grad_(True)
    out = importance_log_ratio(logps, old, b(RATIO_MASK), "sequence")
    out[:, 0].sum().backward()
    expected = t([[1 / 3, 1 / 3, 1 / 3, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(logps.grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(old.grad, -expected, rtol=0, atol=1e-12)


def test_sequence_level_of_an_empty_row_is_zero() -> None:
    got = importance_log_ratio(t([[1.0, 2.0]]), t([[0.0, 0.0]]), b([[False, False]]), "sequence")
    assert got.tolist() == [[0.0, 0.0]]


def test_bad_level_is_an_error() -> None:
    with pytest.raises(ValueError, match="importance_sampling_level must be 'token' or 'sequence', got 'answer'"):
        importance_log_ratio(t(LOGPS), t(OLD_LOGPS), b(RATIO_MASK), "answer")


# ---- overlong penalty ------------------------------------------------------------------------------------------


def test_overlong_penalty_ramps_over_the_buffer() -> None:
    """max 20, buffer 5: free up to 15 tokens, then -(length - 15) / 5: 16 -> -0.2, 18 -> -0.6, 20 -> -1; 25 -> -2."""
    lengths = torch.tensor([10, 15, 16, 18, 20, 25])
    got = overlong_penalty(lengths, 20, 5).tolist()
    assert got == pytest.approx([0.0, 0.0, -0.2, -0.6, -1.0, -2.0], abs=1e-6)
    got = overlong_penalty(lengths, 20, 5, factor=0.5).tolist()
    assert got == pytest.approx([0.0, 0.0, -0.1, -0.3, -0.5, -1.0], abs=1e-6)


def test_overlong_penalty_without_a_buffer_is_zero() -> None:
    got = overlong_penalty(torch.tensor([10, 20, 30]), 20, 0)
    assert got.dtype == torch.float32
    assert got.tolist() == [0.0, 0.0, 0.0]


# ---- informative groups ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_informative_groups(dtype: torch.dtype) -> None:
    """Groups of 3: [0.1 x 3] (mean (0.1 + 0.1 + 0.1) / 3 is not 0.1 in float64), [0.3 x 3], [1, 0, 1]."""
    scores = torch.tensor([0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 1.0, 0.0, 1.0], dtype=dtype)
    assert informative_groups(scores, 3).tolist() == [False, False, True]


def test_informative_groups_count_only_valid_answers() -> None:
    """[0.2, 0.9, 0.5] with one valid answer: False; [1, 1, 0] with the 0 skipped: False; [1, 1, 5] with the 5
    skipped: False; [1, 0, 5] with the 5 skipped: True; [4, 4, 4] with all skipped: False."""
    scores = t([0.2, 0.9, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 5.0, 1.0, 0.0, 5.0, 4.0, 4.0, 4.0])
    valid = b([False, True, False] + [True, True, False] * 3 + [False, False, False])
    assert informative_groups(scores, 3, valid).tolist() == [False, False, False, True, False]
