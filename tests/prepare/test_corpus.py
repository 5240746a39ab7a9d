"""The built-in pretraining corpus never holds a held-out task prompt or its answer, in any of its phrasings."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lit_llm.prepare import drills
from lit_llm.prepare.corpus import generate_raw_corpus
from lit_llm.tasks import split_of, task_records

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "demo.yaml"

# Each practice statement that restates a task prompt, and that prompt rebuilt from what it captured.
_STATEMENTS = {
    "reverse": (re.compile(r"^Backwards, the words ([a-z ]+) read [a-z ]+\.$"),
                lambda m: f"Reverse the order of the words: {m[1]}" if len(m[1].split()) in (3, 4) else None),
    "upper": (re.compile(r"^In capital letters, ([a-z ]+) is [A-Z ]+\.$"),
              lambda m: f"Write in capital letters: {m[1]}" if len(m[1].split()) > 1 else None),
    "count": (re.compile(r"^In ([a-z]+) \([a-z ]+\) the letter ([a-z]) appears \d+ times?\.$"),
              lambda m: f"How many times does the letter {m[2]} appear in {m[1]}?"),
    "add": (re.compile(r"^(\d+) plus (\d+) makes \d+\.$"),
            lambda m: f"What is {m[1]} + {m[2]}?" if int(m[1]) < 100 and int(m[2]) < 100 else None),
    "multiply": (re.compile(r"^(\d+) times (\d+) makes \d+\.$"), lambda m: f"What is {m[1]} * {m[2]}?"),
    "sort": (re.compile(r"^Put in order, ([\d ]+) goes [\d ]+\.$"),
             lambda m: f"Sort from smallest to largest: {m[1]}" if 3 <= len(m[1].split()) <= 5 else None),
}


@pytest.fixture(scope="module")
def demo_corpus() -> list[str]:
    """The raw corpus exactly as the demo's prepare step reads it (`builtin:N` of configs/data/demo.yaml)."""
    (source,) = yaml.safe_load(DEMO_CONFIG.read_text())["sources"]
    return list(generate_raw_corpus(int(source.split(":")[1])))


def test_practice_statements_restate_only_training_prompts(demo_corpus):
    restated: Counter[tuple[str, str]] = Counter()
    for doc in demo_corpus:
        for line in doc.splitlines():
            for task, (pattern, prompt_of) in _STATEMENTS.items():
                match = pattern.match(line)
                prompt = prompt_of(match) if match else None
                if prompt is not None:
                    restated[task, split_of(prompt)] += 1
    for task in _STATEMENTS:  # every kind is there, so the check above is not empty
        assert restated[task, "train"] > 100, (task, restated)
        assert restated[task, "val"] == restated[task, "test"] == 0, (task, restated)


def test_no_held_out_prompt_or_answer_appears_in_the_corpus(demo_corpus):
    text = "\n".join(demo_corpus)
    held_out = task_records("test", per_task=60) + task_records("val", per_task=20)
    assert len(held_out) >= 480
    for record in held_out:
        assert record["instruction"] not in text
        # Answers that only their own prompt has (a sorted list is not), as a whole: "... read honey hook tulip.",
        # "... is COAT TOOTH." (not "IS A COAT TOOTH.", the answer to another prompt).
        lead = {"reverse": "read", "upper": "is"}.get(record["task"])
        if lead:
            assert f" {lead} {record['output']}." not in text, record


def test_the_filter_is_what_keeps_held_out_prompts_out(monkeypatch):
    """Without the train-split check, practice text would restate val and test prompts: the test above can fail."""
    monkeypatch.setattr(drills, "_in_train", lambda prompt: True)
    lines = "\n".join(generate_raw_corpus(3000)).splitlines()
    splits = Counter()
    for line in lines:
        for pattern, prompt_of in _STATEMENTS.values():
            match = pattern.match(line)
            if match and prompt_of(match):
                splits[split_of(prompt_of(match))] += 1
    assert splits["test"] > 0 and splits["val"] > 0
