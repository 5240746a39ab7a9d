"""`lit-llm evaluate --samples k`: pass@1 and pass@k per task (Chen et al.'s unbiased estimator over each prompt's k
sampled answers) beside the exact match and reward, hand-checked on fixed answers and end to end on a tiny
checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_llm import metrics
from lit_llm.checkpoint import load_bundle
from lit_llm.cli.commands import main
from lit_llm.errors import ConfigError
from lit_llm.eval import stats
from lit_llm.rollout import answers
from lit_llm.rollout.answers import evaluate_checkpoint, evaluate_checkpoints, score_answers
from lit_llm.rollout.sampler import RolloutSampler
from lit_llm.tasks import task_records
from lit_llm.text.templates import load_style
from tests.stages import conftest as stage_fixtures

base_checkpoint = stage_fixtures.base_checkpoint  # the session fixture of the stage tests


@pytest.mark.parametrize("pass_at_k", [metrics.pass_at_k, stats.pass_at_k])
def test_pass_at_k_against_hand_computed_values(pass_at_k):
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3, 2) / C(5, 2) = 1 - 3 / 10
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0 and pass_at_k(4, 1, 4) == 1.0  # n - c < k: every k-subset holds a pass
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(3, 4, 1)


def test_pass_at_k_per_task_on_fixed_answers(base_checkpoint, monkeypatch):
    """Two samples of four prompts, scripted by sample (seed // 1000): correct answers per prompt c = 2, 1, 0, 0."""
    records = task_records("test", ["add", "upper"], per_task=2, seed=0)  # add, upper, add, upper
    right, wrong = [r["output"] for r in records], ["no"] * 4
    script = {0: [right[0], wrong[1], wrong[2], wrong[3]], 1: [right[0], right[1], wrong[2], wrong[3]]}
    monkeypatch.setattr(RolloutSampler, "answer", lambda self, model, batch, style, seed: script[seed // 1000])
    tokenizer = load_bundle(str(base_checkpoint)).tokenizer
    conversations = [[{"role": "user", "content": r["instruction"]}] for r in records]
    result = score_answers(None, tokenizer, load_style("alpaca"), conversations, [r["task"] for r in records],
                           temperature=1.0, samples=2)  # fmt: skip
    add, upper, every = (result.scores[t] for t in ("add", "upper", "all"))
    assert list(result.scores) == ["add", "upper", "all"] and result.responses == script[0]
    assert (add["n"], add["prompts"], every["n"], every["prompts"]) == (4, 2, 8, 4)
    assert (add["pass_at_1"], add["pass_at_2"]) == (0.5, 0.5)  # c = 2 and 0
    assert (upper["pass_at_1"], upper["pass_at_2"]) == (0.25, 0.5)  # c = 1 and 0
    assert (every["pass_at_1"], every["pass_at_2"]) == (0.375, 0.5)
    assert every["exact_match"] == 0.375  # the exact match over all samples is pass@1
    one = score_answers(None, tokenizer, load_style("alpaca"), conversations, [r["task"] for r in records],
                        temperature=1.0)  # fmt: skip
    assert set(one.scores["all"]) == {"n", "exact_match", "reward"}  # samples=1: no pass@k


def test_evaluate_with_four_samples_end_to_end(base_checkpoint, capsys):
    kwargs = dict(tasks=["add", "upper"], per_task=3, max_new_tokens=4, temperature=1.0, samples=4)
    scores = evaluate_checkpoint(str(base_checkpoint), **kwargs).scores
    assert list(scores) == ["add", "upper", "all"]
    for entry in scores.values():
        assert set(entry) == {"n", "exact_match", "reward", "prompts", "pass_at_1", "pass_at_4"}
        assert 0.0 <= entry["pass_at_1"] <= entry["pass_at_4"] <= 1.0
        assert entry["n"] == 4 * entry["prompts"] and entry["pass_at_1"] == pytest.approx(entry["exact_match"])
    assert scores["all"]["prompts"] == 6
    assert evaluate_checkpoint(str(base_checkpoint), **kwargs).scores == scores  # the same seeds: the same numbers

    argv = ["evaluate", "--checkpoints", f"[{base_checkpoint}]", "--tasks", "[add,upper]", "--per_task", "3",
            "--max_new_tokens", "4", "--temperature", "1.0"]  # fmt: skip
    main(argv)
    plain = capsys.readouterr().out
    assert "pass@" not in plain
    main([*argv, "--samples", "4"])
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert lines[0].endswith("(4 answer(s) per prompt sampled at temperature 1.0):")
    pass_1 = lines.index("pass@1 over each prompt's 4 answers (Chen et al.'s unbiased estimator; n = prompts):")
    pass_4 = lines.index("pass@4 (share of prompts with an exact answer among their 4):")
    assert lines[pass_1 + 2].split() == ["add", "3", f"{scores['add']['pass_at_1']:.3f}"]
    assert lines[pass_4 + 4].split() == ["all", "6", f"{scores['all']['pass_at_4']:.3f}"]
    assert lines[2].split()[:2] == ["add", "12"]  # the exact-match table counts answers: 3 prompts x 4 samples


@pytest.mark.parametrize(
    ("options", "message"),
    [({"samples": 2}, "samples 2 > 1 draws answers for pass@k and needs temperature > 0, got temperature 0.0"),
     ({"samples": 0}, "samples must be at least 1, got 0")],
)  # fmt: skip
def test_bad_samples_fail_before_loading(tmp_path: Path, capsys, options, message):
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=message):
        evaluate_checkpoint(missing, **options)
    with pytest.raises(ConfigError, match=message):
        evaluate_checkpoints([missing], device="cpu", **options)
    with pytest.raises(ConfigError, match=message):
        answers.check_sampling(options["samples"], 0.0)
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoints", f"[{missing}]", "--samples", str(options["samples"])])
    assert f"lit-llm: error: {message}" in capsys.readouterr().err
