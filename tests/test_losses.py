"""next_token_loss and prefix_lm_targets against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lit_llm.losses import IGNORE_INDEX, next_token_loss, prefix_lm_targets

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
