"""Verifiable tasks: hand-worked answers, verifier rewards, split disjointness, determinism, dispatch, errors."""

from __future__ import annotations

import difflib
import random
import warnings

import pytest

from lit_llm.tasks import (
    SPLITS,
    TASKS,
    WORDS,
    Task,
    get_task,
    split_of,
    task_of,
    task_records,
    verify,
)
from lit_llm.errors import DataError

ORDER = ["reverse", "sort", "add", "multiply", "count", "upper"]


def alpaca(instruction: str) -> str:
    return (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        f"### Instruction:\n{instruction}\n\n### Response:\n"
    )


@pytest.mark.parametrize(
    ("name", "prompt", "expected"),
    [
        ("reverse", "Reverse the order of the words: red fox sun", "sun fox red"),
        ("reverse", "Reverse the order of the words: the big dog jumps", "jumps dog big the"),
        ("sort", "Sort from smallest to largest: 42 7 19", "7 19 42"),
        ("sort", "Sort from smallest to largest: 5 99 0 5 13", "0 5 5 13 99"),
        ("add", "What is 23 + 58?", "81"),
        ("add", "What is 0 + 0?", "0"),
        ("multiply", "What is 7 * 12?", "84"),
        ("multiply", "What is 99 * 25?", "2475"),
        ("count", "How many times does the letter a appear in banana?", "3"),
        ("count", "How many times does the letter z appear in banana?", "0"),
        ("upper", "Write in capital letters: the red fox", "THE RED FOX"),
    ],
)
def test_answer_by_hand(name: str, prompt: str, expected: str) -> None:
    task = get_task(name)
    assert task.answer(prompt) == expected
    assert task.answer(alpaca(prompt)) == expected
    assert task.answer(f"<|user|>\n{prompt}<|end|>\n<|assistant|>\n") == expected
    assert task_of(prompt) is task


def test_registry() -> None:
    assert list(TASKS) == ORDER
    assert SPLITS == ("train", "val", "test")
    for name, task in TASKS.items():
        assert isinstance(task, Task)
        assert task.name == name
        assert task.description and "\n" not in task.description
    assert all(3 <= len(w) <= 8 and w.isalpha() and w.islower() for w in WORDS)
    assert len(set(WORDS)) == len(WORDS) >= 300


def test_answer_none_for_other_prompts() -> None:
    assert get_task("add").answer("What is 7 * 12?") is None
    assert get_task("multiply").answer("What is 7 + 12?") is None
    assert get_task("sort").answer("Once upon a time there was a fox.") is None
    assert task_of("Once upon a time there was a fox.") is None
    assert task_of("What is the capital of France?") is None


def test_verify_rewards() -> None:
    add = get_task("add")
    prompt = "What is 23 + 58?"
    assert add.verify(prompt, "81") == 1.0
    assert add.verify(prompt, "  81  ") == 1.0
    assert add.verify(prompt, "81\nWhat is 1 + 1? 2") == 1.0
    assert add.verify(prompt, "\n81\n\njunk") == 1.0
    assert add.exact_match(prompt, "81\nmore")
    assert not add.exact_match(prompt, "82")

    expected = 0.5 * difflib.SequenceMatcher(None, "82", "81").ratio()
    assert expected == 0.25
    assert add.verify(prompt, "82") == pytest.approx(expected)
    assert 0.0 < add.verify(prompt, "821") <= 0.5
    assert add.verify(prompt, "") == 0.0

    upper = get_task("upper")
    assert upper.verify("Write in capital letters: the red fox", "THE   RED\tFOX\nThe end.") == 1.0
    wrong = upper.verify("Write in capital letters: the red fox", "the red fox")
    assert 0.0 <= wrong <= 0.5

    assert add.verify("Write in capital letters: the red fox", "THE RED FOX") == 0.0
    assert verify("Tell me a story.", "81") == 0.0
    assert verify(alpaca(prompt), "81") == 1.0
    assert verify(alpaca("Sort from smallest to largest: 42 7 19"), "7 19 42\n\n### Instruction") == 1.0
    assert verify("<|user|>\nWhat is 7 * 12?<|end|>\n<|assistant|>\n", "84") == 1.0


def test_generated_records_verify_and_dispatch() -> None:
    for split in SPLITS:
        records = task_records(split, per_task=60, seed=3)
        assert len(records) == 60 * len(TASKS)
        for record in records:
            assert set(record) == {"instruction", "input", "output", "task"}
            assert record["input"] == ""
            assert split_of(record["instruction"]) == split
            task = task_of(record["instruction"])
            assert task is not None and task.name == record["task"]
            assert task.verify(record["instruction"], record["output"]) == 1.0
            assert verify(alpaca(record["instruction"]), record["output"]) == 1.0
            for other in TASKS.values():
                if other is not task:
                    assert other.answer(record["instruction"]) is None


def test_sample_matches_answer() -> None:
    rng = random.Random(0)
    for task in TASKS.values():
        for _ in range(300):
            prompt, answer = task.sample(rng)
            assert task.answer(prompt) == answer
            assert task_of(prompt) is task


def test_splits_disjoint_and_per_task() -> None:
    by_split = {split: task_records(split, per_task=150, seed=seed) for split, seed in zip(SPLITS, (0, 1, 2))}
    prompts = {split: {r["instruction"] for r in records} for split, records in by_split.items()}
    for split, records in by_split.items():
        assert len(prompts[split]) == len(records) == 150 * len(TASKS)  # distinct within a split
        assert all(split_of(p) == split for p in prompts[split])
    assert not prompts["train"] & prompts["val"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]
    assert {split_of(f"What is {a} + {b}?") for a in range(100) for b in range(100)} == set(SPLITS)


def test_deterministic_and_round_robin() -> None:
    first = task_records("train", per_task=40, seed=7)
    assert first == task_records("train", per_task=40, seed=7)
    assert first != task_records("train", per_task=40, seed=8)
    assert [r["task"] for r in first] == ORDER * 40

    chosen = task_records("val", tasks=["upper", "add"], per_task=5)
    assert [r["task"] for r in chosen] == ["upper", "add"] * 5
    assert task_records("val", tasks=["upper", "add"], per_task=5) == chosen
    assert task_records("test", tasks=["count"], per_task=0) == []


def test_large_train_request_fills_every_task() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = task_records("train", per_task=2000)
    assert len(records) == 2000 * len(TASKS)
    assert len({r["instruction"] for r in records}) == len(records)


def test_exhausted_prompt_space_warns() -> None:
    # "add" has 10000 prompts, about a tenth of them in "test".
    with pytest.warns(UserWarning, match=r"'add' gave only \d+ distinct test prompts"):
        records = task_records("test", tasks=["add"], per_task=5000)
    assert 900 < len(records) < 1100
    assert len({r["instruction"] for r in records}) == len(records)


def test_unknown_names() -> None:
    with pytest.raises(DataError, match="divide") as info:
        get_task("divide")
    assert "reverse" in str(info.value) and "upper" in str(info.value)
    with pytest.raises(DataError, match="divide"):
        task_records("train", tasks=["add", "divide"])
    with pytest.raises(DataError, match="validation"):
        task_records("validation")
    with pytest.raises(DataError, match="-1"):
        task_records("train", per_task=-1)


# ---- wrong answers and preference pairs ---------------------------------------------------------------------------


def test_wrong_answer_is_never_right_and_is_deterministic() -> None:
    from lit_llm.tasks import _normalize

    for name, task in TASKS.items():
        sample_rng = random.Random(f"wrong:{name}")
        prompts = [task.sample(sample_rng)[0] for _ in range(200)]
        rng = random.Random(11)
        wrongs = [task.wrong_answer(prompt, rng) for prompt in prompts]
        for prompt, wrong in zip(prompts, wrongs):
            assert isinstance(wrong, str) and wrong.strip(), (name, prompt)
            assert _normalize(wrong) != task.answer(prompt), (name, prompt, wrong)
            assert task.verify(prompt, wrong) < 1.0, (name, prompt, wrong)
            assert not task.exact_match(prompt, wrong)
            assert verify(prompt, wrong) < 1.0
        # A seeded generator gives the same wrong answers; another seed gives (some) different ones.
        again = random.Random(11)
        assert [task.wrong_answer(prompt, again) for prompt in prompts] == wrongs, name
        other = random.Random(12)
        assert [task.wrong_answer(prompt, other) for prompt in prompts] != wrongs, name
        # Wrong answers vary: not one fixed mistake per task.
        assert len(set(wrongs)) > 3, name


def test_wrong_answer_also_reads_templated_prompts() -> None:
    prompt = "What is 23 + 58?"
    wrapped = alpaca(prompt)
    assert get_task("add").wrong_answer(wrapped, random.Random(0)) == get_task("add").wrong_answer(
        prompt, random.Random(0)
    )
    assert get_task("add").verify(wrapped, get_task("add").wrong_answer(wrapped, random.Random(1))) < 1.0


def test_wrong_answer_of_another_tasks_prompt_is_an_error() -> None:
    with pytest.raises(DataError, match="is not a add prompt"):
        get_task("add").wrong_answer("What is 7 * 12?", random.Random(0))
    with pytest.raises(DataError, match="reverse"):
        get_task("reverse").wrong_answer("Tell me a story.", random.Random(0))


def test_mistake_kinds_by_hand() -> None:
    # Each mistake of "sort" is a swap of neighbours, a lost number, or the input left unsorted.
    sort, prompt = get_task("sort"), "Sort from smallest to largest: 42 7 19"
    seen = {sort.wrong_answer(prompt, random.Random(seed)) for seed in range(200)}
    assert seen <= {"42 7 19", "19 7 42", "7 42 19", "7 19", "7 42", "19 42"} and len(seen) >= 4
    # "count" never goes below zero; an answer of 0 gets only 1 or 2.
    count, zero = get_task("count"), "How many times does the letter z appear in banana?"
    assert {count.wrong_answer(zero, random.Random(seed)) for seed in range(200)} == {"1", "2"}
    # "add" stays a non-negative number near the answer.
    add = get_task("add")
    for seed in range(200):
        wrong = add.wrong_answer("What is 0 + 3?", random.Random(seed))
        assert wrong.isdigit() and wrong != "3" and int(wrong) <= 13


def test_task_pairs_records() -> None:
    from lit_llm.tasks import task_pairs

    for split in SPLITS:
        pairs = task_pairs(split, per_task=40, seed=5)
        records = task_records(split, per_task=40, seed=5)
        assert len(pairs) == len(records) == 40 * len(TASKS)
        assert [r["task"] for r in pairs] == ORDER * 40
        for pair, record in zip(pairs, records):
            assert set(pair) == {"prompt", "chosen", "rejected", "task"}
            assert pair["prompt"] == record["instruction"] and pair["chosen"] == record["output"]
            task = get_task(pair["task"])
            assert task_of(pair["prompt"]) is task
            assert task.verify(pair["prompt"], pair["chosen"]) == 1.0
            assert task.verify(pair["prompt"], pair["rejected"]) < 1.0
            assert pair["rejected"] != pair["chosen"]
            assert split_of(pair["prompt"]) == split
    assert task_pairs("val", per_task=20, seed=5) == task_pairs("val", per_task=20, seed=5)
    assert task_pairs("val", per_task=20, seed=5) != task_pairs("val", per_task=20, seed=6)
    assert [r["task"] for r in task_pairs("test", tasks=["upper", "add"], per_task=3)] == ["upper", "add"] * 3
    assert task_pairs("train", tasks=["count"], per_task=0) == []
    with pytest.raises(DataError, match="divide"):
        task_pairs("train", tasks=["divide"])
