"""`Groups` and `GroupBuffer` (DAPO's dynamic sampling): picking and joining groups keeps every field's rows
aligned, the state survives a weights-only checkpoint, and the buffer's counts, readiness, pops and fallback to the
last batch follow the rules worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_llm.stages.groups import GroupBuffer, Groups


def make_groups(group_scores: list[list[float]], tag: str = "", valid: list[list[bool]] | None = None) -> Groups:
    """Groups with row r of group g tagged (g, j) in every field, so any misalignment shows."""
    size = len(group_scores[0])
    g = Groups(size)
    rows = [(gi, j) for gi in range(len(group_scores)) for j in range(size)]
    g.prompts = [[100 + gi, 7] for gi, _ in rows]  # the G answers of a group share its prompt
    g.responses = [[gi, j, 1000] for gi, j in rows]
    g.ended = [j % 2 == 0 for _, j in rows]
    g.texts = [f"{tag}answer {gi}.{j}" for gi, j in rows]
    g.messages = [[{"role": "user", "content": f"{tag}prompt {gi}"}] for gi, _ in rows]
    g.tasks = [f"task{gi}" for gi, _ in rows]
    g.references = [None if gi % 2 else f"ref{gi}" for gi, _ in rows]
    g.scores = torch.tensor([s for group in group_scores for s in group])
    flat_valid = [True] * len(rows) if valid is None else [v for group in valid for v in group]
    g.valid = torch.tensor(flat_valid)
    g.per_source = {
        "verify": torch.tensor([float(10 * gi + j) for gi, j in rows]),
        "format": torch.tensor([float(-gi) for gi, _ in rows]),
    }
    g.engine_logps = [[-float(gi), -float(j)] for gi, j in rows]
    return g


def rows_of(g: Groups) -> list[tuple[int, int]]:
    """The (group, answer) tag of each row, read from the responses."""
    return [(r[0], r[1]) for r in g.responses]


def assert_rows(g: Groups, rows: list[tuple[int, int]], tag: str = "") -> None:
    """Every field of `g` holds exactly the rows `rows` of a `make_groups` batch, in that order."""
    assert g.prompts == [[100 + gi, 7] for gi, _ in rows]
    assert g.responses == [[gi, j, 1000] for gi, j in rows]
    assert g.ended == [j % 2 == 0 for _, j in rows]
    assert g.texts == [f"{tag}answer {gi}.{j}" for gi, j in rows]
    assert g.messages == [[{"role": "user", "content": f"{tag}prompt {gi}"}] for gi, _ in rows]
    assert g.tasks == [f"task{gi}" for gi, _ in rows]
    assert g.references == [None if gi % 2 else f"ref{gi}" for gi, _ in rows]
    assert g.per_source["verify"].tolist() == [float(10 * gi + j) for gi, j in rows]
    assert g.per_source["format"].tolist() == [float(-gi) for gi, _ in rows]
    assert sorted(g.per_source) == ["format", "verify"]
    assert g.engine_logps == [[-float(gi), -float(j)] for gi, j in rows]


# ---- Groups -------------------------------------------------------------------------------------------------

SCORES = [[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]]


def test_take_keeps_every_field_aligned() -> None:
    g = make_groups(SCORES, valid=[[True, True], [True, False], [False, True]])
    assert g.count == 3
    picked = g.take([2, 0])
    assert picked.size == 2 and picked.count == 2
    assert_rows(picked, [(2, 0), (2, 1), (0, 0), (0, 1)])
    assert picked.scores.tolist() == [0.0, 2.0, 1.0, 0.0]
    assert picked.valid.tolist() == [False, True, True, True]
    # a tensor of indices works the same
    assert rows_of(g.take(torch.tensor([1]))) == [(1, 0), (1, 1)]


def test_take_nothing_gives_empty_fields() -> None:
    empty = make_groups(SCORES).take([])
    assert empty.count == 0
    assert empty.prompts == [] and empty.texts == [] and empty.references == []
    assert empty.scores.shape == (0,) and empty.valid.dtype == torch.bool
    assert {k: v.shape for k, v in empty.per_source.items()} == {"verify": (0,), "format": (0,)}


def test_add_concatenates_every_field() -> None:
    g = make_groups(SCORES, valid=[[True, True], [True, False], [False, True]])
    joined = g.take([0]) + g.take([2, 1])
    assert joined.count == 3
    assert_rows(joined, [(0, 0), (0, 1), (2, 0), (2, 1), (1, 0), (1, 1)])
    assert joined.scores.tolist() == [1.0, 0.0, 0.0, 2.0, 0.5, 0.5]
    assert joined.valid.tolist() == [True, True, False, True, True, False]
    # an empty side leaves the other as it is
    assert rows_of(Groups(2) + g.take([1])) == [(1, 0), (1, 1)]
    assert rows_of(g.take([1]) + g.take([])) == [(1, 0), (1, 1)]


def test_informative_marks_groups_with_differing_valid_rewards() -> None:
    """[1, 0] differs; [0.5, 0.5] is equal; [0, 2] has one valid answer -> only group 0."""
    g = make_groups(SCORES, valid=[[True, True], [True, True], [False, True]])
    assert g.informative().tolist() == [True, False, False]


def test_state_round_trip(tmp_path: Path) -> None:
    g = make_groups(SCORES, tag="x", valid=[[True, False], [True, True], [True, True]])
    restored = Groups.from_state(g.state())
    assert restored.size == 2
    assert_rows(restored, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)], tag="x")
    torch.save(g.state(), tmp_path / "groups.pt")
    loaded = Groups.from_state(torch.load(tmp_path / "groups.pt", weights_only=True))
    assert loaded.size == 2 and loaded.count == 3
    assert_rows(loaded, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)], tag="x")
    assert loaded.scores.tolist() == [1.0, 0.0, 0.5, 0.5, 0.0, 2.0]
    assert loaded.valid.tolist() == [True, False, True, True, True, True]


# ---- GroupBuffer --------------------------------------------------------------------------------------------


def test_buffer_counts_and_readiness_over_several_batches() -> None:
    """target 2, at most 3 generation batches. Informative: batch a [yes, no, no], b [yes, yes, no], c [no x 3]."""
    buffer = GroupBuffer(target=2, max_batches=3)
    assert buffer.held_count == 0 and not buffer.limit_reached()

    buffer.add(make_groups([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], tag="a"))
    assert (buffer.generated, buffer.dropped, buffer.batches, buffer.held_count) == (3, 2, 1, 1)
    assert buffer.held_count < buffer.target and not buffer.limit_reached()  # not ready: generate more

    buffer.add(make_groups([[0.0, 1.0], [0.2, 0.7], [0.5, 0.5]], tag="b"))
    assert (buffer.generated, buffer.dropped, buffer.batches, buffer.held_count) == (6, 3, 2, 3)
    assert buffer.held_count >= buffer.target  # ready

    out = buffer.pop()
    assert out.count == 2
    assert out.texts == ["aanswer 0.0", "aanswer 0.1", "banswer 0.0", "banswer 0.1"]
    assert out.scores.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert buffer.batches == 0 and buffer.held_count == 1  # b's group 1 waits for the next pop
    assert buffer.held.texts == ["banswer 1.0", "banswer 1.1"]
    assert buffer.held.scores.tolist() == pytest.approx([0.2, 0.7])

    buffer.add(make_groups([[1.0, 1.0], [0.0, 0.0], [0.3, 0.3]], tag="c"))
    assert (buffer.generated, buffer.dropped, buffer.batches, buffer.held_count) == (9, 6, 1, 1)
    out = buffer.pop()  # e.g. at the limit: what is held, even if fewer than target
    assert out.texts == ["banswer 1.0", "banswer 1.1"]
    assert buffer.held is None and buffer.held_count == 0


def test_buffer_limit_is_max_batches_since_the_last_pop() -> None:
    buffer = GroupBuffer(target=3, max_batches=2)
    buffer.add(make_groups([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], tag="a"))
    assert not buffer.limit_reached()
    buffer.add(make_groups([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]], tag="b"))
    assert buffer.limit_reached() and buffer.held_count == 2 < buffer.target
    out = buffer.pop()  # the limit: the 2 informative groups held, not a full batch
    assert out.texts == ["aanswer 0.0", "aanswer 0.1", "banswer 1.0", "banswer 1.1"]
    assert not buffer.limit_reached()  # the count restarts after a pop
    assert (buffer.generated, buffer.dropped) == (6, 4)


def test_buffer_pop_hands_out_at_most_target_and_keeps_the_rest() -> None:
    buffer = GroupBuffer(target=2, max_batches=5)
    buffer.add(make_groups([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [0.0, 4.0]], tag="a"))
    assert buffer.held_count == 5 and buffer.dropped == 0
    assert rows_of(buffer.pop()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rows_of(buffer.pop()) == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert buffer.held_count == 1
    last = buffer.pop()
    assert rows_of(last) == [(4, 0), (4, 1)]
    assert last.scores.tolist() == [0.0, 4.0]
    assert buffer.held is None


def test_buffer_falls_back_to_the_last_batch_when_nothing_is_informative() -> None:
    buffer = GroupBuffer(target=2, max_batches=2)
    buffer.add(make_groups([[1.0, 1.0], [0.0, 0.0]], tag="a"))
    buffer.add(make_groups([[0.0, 0.0], [0.5, 0.5]], tag="b", valid=[[True, False], [True, True]]))
    assert buffer.held_count == 0 and buffer.limit_reached()
    assert (buffer.generated, buffer.dropped) == (4, 4)
    out = buffer.pop()
    assert out.count == 2  # batch b, as it was: every field, in order
    assert out.texts == ["banswer 0.0", "banswer 0.1", "banswer 1.0", "banswer 1.1"]
    assert out.scores.tolist() == [0.0, 0.0, 0.5, 0.5]
    assert out.valid.tolist() == [True, False, True, True]
    assert out.messages == [[{"role": "user", "content": f"bprompt {gi}"}] for gi in (0, 0, 1, 1)]
    assert out.per_source["verify"].tolist() == [0.0, 1.0, 10.0, 11.0]
    assert buffer.held is None and buffer.batches == 0


def test_buffer_without_drop_keeps_everything() -> None:
    """One batch is one step: max_batches 1, every group kept, none counted as dropped."""
    buffer = GroupBuffer(target=3, max_batches=1, drop=False)
    buffer.add(make_groups([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    assert (buffer.generated, buffer.dropped, buffer.held_count) == (3, 0, 3)
    assert buffer.limit_reached()
    out = buffer.pop()
    assert_rows(out, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)])
    assert out.scores.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert buffer.held is None


def test_buffer_state_survives_a_weights_only_checkpoint(tmp_path: Path) -> None:
    buffer = GroupBuffer(target=2, max_batches=4)
    buffer.add(make_groups([[1.0, 0.0], [1.0, 1.0]], tag="a"))
    buffer.add(make_groups([[0.0, 0.0], [0.0, 0.0]], tag="b"))
    torch.save(buffer.state(), tmp_path / "buffer.pt")
    restored = GroupBuffer(target=2, max_batches=4)
    restored.load(torch.load(tmp_path / "buffer.pt", weights_only=True))
    assert (restored.generated, restored.dropped, restored.batches, restored.held_count) == (4, 3, 2, 1)
    assert restored.held.texts == ["aanswer 0.0", "aanswer 0.1"]
    # an empty buffer round-trips too
    empty = GroupBuffer(target=2, max_batches=4)
    empty.load(GroupBuffer(target=2, max_batches=4).state())
    assert empty.held is None and (empty.generated, empty.dropped, empty.batches) == (0, 0, 0)
