"""`lit-llm compare`: win-rate arithmetic on fixed answers, bootstrap intervals and pass@k, the per-task table, KL to
the baseline, outputs, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_llm.cli.commands import main
from lit_llm.errors import CheckpointError, ConfigError, DataError
from lit_llm.eval import stats
from lit_llm.eval.compare import (
    ModelResult,
    compare_checkpoints,
    load_prompts,
    task_table,
    verdicts,
    write_comparison,
)
from lit_llm.eval.stats import bootstrap_mean_interval, paired_bootstrap, pass_at_k
from tests.stages.conftest import base_checkpoint, save_model  # noqa: F401  (the session fixture)


def test_verdicts_count_wins_ties_and_losses_prompt_by_prompt():
    v = verdicts([1.0, 0.5, 0.2, None, 0.3], [0.5, 0.5, 0.7, 0.1, None])
    assert (v.wins, v.ties, v.losses) == (1, 1, 1) and v.win_rate == pytest.approx(0.5)
    v = verdicts([1.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    assert (v.wins, v.ties, v.losses) == (2, 1, 0) and v.win_rate == pytest.approx(2.5 / 3)
    assert verdicts([None], [1.0]).win_rate != verdicts([None], [1.0]).win_rate  # nan: nothing compared


def test_table_on_fixed_answers(tmp_path: Path):
    """Two models on four prompts, scores fixed by hand: the table's means and win rates follow."""
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    base = ModelResult("runs/sft/x", "sft", ["a", "b", "c", "d"], [1.0, 0.25, 0.0, None], reward=[0.0, 1.0, 2.0, 3.0],
                       kl_to_baseline=0.0, mean_length=2.0)  # fmt: skip
    other = ModelResult("runs/ppo/x", "ppo", ["a", "B", "C", "D"], [1.0, 0.5, 0.0, None], reward=[1.0, 0.5, 2.0, 4.0],
                        kl_to_baseline=1.25, mean_length=3.0)  # fmt: skip
    for r in (base, other):
        v = verdicts(r.verifier, base.verifier)
        r.win_rate["verifier"] = {"win_rate": v.win_rate}
        v = verdicts(r.reward, base.reward)
        r.win_rate["reward_model"] = {"win_rate": v.win_rate}
    path = write_comparison({"runs/sft/x": base, "runs/ppo/x": other}, "runs/sft/x", conversations, 2, tmp_path)
    table = {row["checkpoint"]: row for row in json.loads((tmp_path / "compare.json").read_text())["table"]}
    ppo = table["runs/ppo/x"]
    assert ppo["verifier_exact_match"] == pytest.approx(1 / 3)  # 1 of the 3 scored prompts
    assert ppo["verifier_reward"] == pytest.approx(1.5 / 3)
    assert ppo["win_rate_verifier"] == pytest.approx((1 + 0.5 * 2) / 3)  # one win (0.5 > 0.25), two ties
    assert ppo["win_rate_reward_model"] == pytest.approx((2 + 0.5) / 4)  # wins on q0, q3; tie q2; loss q1
    assert table["runs/sft/x"]["win_rate_verifier"] == 0.5 and ppo["kl_to_baseline"] == 1.25
    text = path.read_text()
    # checkpoint | stage | EM | Δ EM [CI] | verifier reward | Δ reward [CI] | win rate | KL | length | RM | RM win
    # Δ reward: differences (0, 0.25, 0) on the 3 prompts both scored; a resample of three 0.25s (p = 1/27) or three
    # 0s (p = 8/27) is far more likely than 2.5%, so the interval is [0, 0.25].
    assert ("| runs/ppo/x | ppo | 0.333 | +0.000 [+0.000, +0.000] | 0.500 | +0.083 [+0.000, +0.250] | 0.667 | 1.250 "
            "| 3.000 | 1.875 | 0.625 |") in text  # fmt: skip
    assert "| runs/sft/x | sft | 0.333 | (baseline) | 0.417 | (baseline) |" in text
    assert "paired percentile bootstrap over prompts (B=10000 resamples, seed 0)" in text
    assert "per task" not in text  # no prompt is a task prompt: the scored ones count overall only
    assert "- `runs/ppo/x`: 'B'" in text and "**q1**" in text and "**q2**" not in text
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def _plain_percentile_interval(x: list[float], num_samples: int, seed: int, confidence: float) -> tuple[float, float]:
    """The documented draws (rows of `default_rng(seed).integers(0, n, size=(B, n))`), each row's mean by a plain
    loop, and the linearly interpolated percentiles of the sorted means, by hand."""
    rows = np.random.default_rng(seed).integers(0, len(x), size=(num_samples, len(x))).tolist()
    means = sorted(sum(x[j] for j in row) / len(row) for row in rows)

    def quantile(q: float) -> float:
        pos = q * (len(means) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (pos - lo) * (means[hi] - means[lo])

    return quantile((1 - confidence) / 2), quantile((1 + confidence) / 2)


def test_paired_bootstrap_on_arrays_with_known_intervals():
    b = [0.0, 0.3, 1.0, 0.5, 0.25]
    diff, low, high = paired_bootstrap([v + 0.1 for v in b], b)  # every difference 0.1: every resample too
    assert (diff, low, high) == pytest.approx((0.1, 0.1, 0.1))
    assert paired_bootstrap([0.7], [0.2], num_samples=50, seed=3) == pytest.approx((0.5, 0.5, 0.5))
    # Pairs, not two separate samples: equal arrays differ by exactly 0 in every resample.
    assert paired_bootstrap([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]) == (0.0, 0.0, 0.0)
    # Differences (1, 0): a resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles are 0 and 1, and the 30% and 70% ones (confidence 0.4) both 0.5.
    assert paired_bootstrap([1.0, 0.0], [0.0, 0.0]) == (0.5, 0.0, 1.0)
    assert paired_bootstrap([1.0, 0.0], [0.0, 0.0], confidence=0.4) == (0.5, 0.5, 0.5)
    assert bootstrap_mean_interval([0.0, 1.0]) == (0.5, 0.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([]))
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1.0, 0.0], [1.0])
    with pytest.raises(ConfigError, match="bootstrap must be at least 1"):
        bootstrap_mean_interval([1.0], num_samples=0)


def test_bootstrap_matches_a_plain_loop_over_the_seeded_draws(monkeypatch):
    x = [0.0, 0.25, 1.0, 0.5, 0.0, 0.75, 1.0]
    for num_samples, seed, confidence in ((9, 3, 0.95), (40, 0, 0.9), (1000, 7, 0.95)):
        low, high = _plain_percentile_interval(x, num_samples, seed, confidence)
        assert low < high  # not a degenerate case
        mean, got_low, got_high = bootstrap_mean_interval(x, num_samples, seed, confidence)
        assert (mean, got_low, got_high) == pytest.approx((sum(x) / len(x), low, high))
        a = [v + w for v, w in zip(x, [0.5, 1.0, 0.0, 2.0, 0.5, 0.25, 0.0])]
        diff, got_low, got_high = paired_bootstrap(a, [v - x_ for v, x_ in zip(a, x)], num_samples, seed, confidence)
        assert (diff, got_low, got_high) == pytest.approx((sum(x) / len(x), low, high))
    assert bootstrap_mean_interval(x, 1000, 1) != bootstrap_mean_interval(x, 1000, 2)  # the seed matters
    whole = bootstrap_mean_interval(x, 1000, 7)
    monkeypatch.setattr(stats, "CHUNK", 3 * len(x) + 1)  # 3 rows a chunk, the last one short: the same draws
    assert bootstrap_mean_interval(x, 1000, 7) == whole


def test_pass_at_k_against_hand_computed_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3, 2) / C(5, 2)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - 35 / 210)  # 1 - C(7, 4) / C(10, 4)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0 and pass_at_k(4, 4, 4) == 1.0  # n - c < k: every k-subset has a pass
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    for n, c, k in ((5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)):
        with pytest.raises(ValueError, match="pass_at_k needs"):
            pass_at_k(n, c, k)


PROMPTS = ["What is 2 + 3?", "What is 10 + 5?", "How many times does the letter a appear in banana?",
           "Write in capital letters: red fox", "Tell me a joke"]  # fmt: skip
ANSWERS = {
    # rewards: 1, 0.5 * difflib ratio("14", "15") = 0.25, 1, 0.5 * ratio("red fox", "RED FOX") = 1/14, unscored
    "runs/sft/x": ["5", "14", "3", "red fox", "why not"],
    "runs/ppo/x": ["5", "15", "2", "RED FOX", "no"],  # 1, 1, 0 (ratio("2", "3") = 0), 1, unscored
}


def test_task_table_on_fixed_answers():
    table = task_table(PROMPTS, ANSWERS, "runs/sft/x", bootstrap=2000, seed=0)
    sft, ppo = table["runs/sft/x"], table["runs/ppo/x"]
    assert list(sft) == ["add", "count", "upper", "all"]  # TASKS order; the joke is no task and not scored
    assert {g: e["n"] for g, e in ppo.items()} == {"add": 2, "count": 1, "upper": 1, "all": 4}
    assert [sft[g]["exact_match"] for g in sft] == [0.5, 1.0, 0.0, 0.5]
    assert [ppo[g]["exact_match"] for g in ppo] == [1.0, 0.0, 1.0, 0.75]
    assert [sft[g]["verifier_reward"] for g in sft] == pytest.approx([0.625, 1.0, 1 / 14, (2.25 + 1 / 14) / 4])
    assert [ppo[g]["verifier_reward"] for g in ppo] == pytest.approx([1.0, 0.0, 1.0, 0.75])
    # Paired differences: add EM (0, 1) -> mean 0.5, interval [0, 1] (resampled means 0, 0.5, 1); one-prompt tasks
    # differ by exactly their one difference; the baseline by 0.
    assert (ppo["add"]["delta_exact_match"], ppo["add"]["delta_exact_match_ci"]) == (0.5, [0.0, 1.0])
    assert (ppo["add"]["delta_verifier_reward"], ppo["add"]["delta_verifier_reward_ci"]) == (0.375, [0.0, 0.75])
    assert (ppo["count"]["delta_exact_match"], ppo["count"]["delta_exact_match_ci"]) == (-1.0, [-1.0, -1.0])
    assert ppo["upper"]["delta_verifier_reward"] == pytest.approx(13 / 14)
    assert ppo["all"]["delta_exact_match"] == 0.25 and ppo["all"]["paired_n"] == 4
    low, high = ppo["all"]["delta_exact_match_ci"]
    assert -1 < low < 0.25 < high <= 1
    assert all(sft[g]["delta_exact_match_ci"] == [0.0, 0.0] for g in sft)
    # Each model's own exact-match interval (not paired): add (1, 0) -> [0, 1]; one prompt -> that prompt's value.
    assert sft["add"]["exact_match_ci"] == [0.0, 1.0] and ppo["upper"]["exact_match_ci"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="3 responses for 5 prompts"):
        task_table(PROMPTS, {"a": ["1", "2", "3"]}, "a")


def test_per_task_tables_and_pass_at_k_in_the_report(tmp_path: Path):
    from lit_llm.tasks import verify

    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    results = {}
    for path, answers in ANSWERS.items():
        scores = [verify(p, a) if i < 4 else None for i, (p, a) in enumerate(zip(PROMPTS, answers))]
        results[path] = ModelResult(path, path.split("/")[1], answers, scores, mean_length=1.0)
    # Two samples per task prompt: ppo passes 2, 1, 0 and 1 of them; sft none.
    results["runs/ppo/x"].sample_verifier = [[1.0, 1.0], [1.0, 0.2], [0.0, 0.0], [0.0, 1.0], None]
    results["runs/sft/x"].sample_verifier = [[0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.3, 0.0], None]
    path = write_comparison(results, "runs/sft/x", conversations, 1, tmp_path, bootstrap=500, seed=4,
                            settings={"temperature": 0.7})  # fmt: skip
    text = path.read_text()
    assert "(B=500 resamples, seed 4)" in text and "| pass@1 (n=2) | pass@2 |" in text
    assert "| runs/ppo/x | ppo | 0.750 | +0.250 [" in text
    assert " | 0.500 | 0.750 |\n" in text  # ppo: pass@1 = (1 + 0.5 + 0 + 0.5) / 4, pass@2 = (1 + 1 + 0 + 1) / 4
    em, reward = text.split("## Exact match per task")[1].split("## Verifier reward per task")
    assert "| checkpoint | add (n=2) | count (n=1) | upper (n=1) | all (n=4) |" in em
    assert "| runs/sft/x | 0.500 | 1.000 | 0.000 | 0.500 |" in em
    assert "| runs/ppo/x | 1.000 | 0.000 | 1.000 | 0.750 |" in em
    assert "| runs/sft/x | 0.625 | 1.000 | 0.071 | 0.580 |" in reward
    report = json.loads((tmp_path / "compare.json").read_text())
    assert report["bootstrap"]["resamples"] == 500 and report["bootstrap"]["seed"] == 4
    assert report["pass_at_k"]["k"] == 2 and report["settings"] == {"temperature": 0.7}
    ppo = {row["checkpoint"]: row for row in report["table"]}["runs/ppo/x"]
    # The JSON per-task entries are task_table's on the same answers, plus the pass@k keys.
    expected = task_table(PROMPTS, ANSWERS, "runs/sft/x", 500, 4)["runs/ppo/x"]
    for group, entry in expected.items():
        assert {k: v for k, v in ppo["per_task"][group].items() if not k.startswith("pass")} == entry
    assert ppo["per_task"]["add"]["pass_at_1"] == 0.75 and ppo["per_task"]["add"]["pass_at_k"] == 1.0
    assert (ppo["pass_at_1"], ppo["pass_at_k"], ppo["delta_exact_match"]) == (0.5, 0.75, 0.25)
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_two_checkpoints(base_checkpoint, tmp_path: Path):  # noqa: F811
    """The baseline against itself: win rate 0.5 and KL exactly 0; another model has a positive KL (greedy answers
    are its modes, so log p_model > log p_baseline on them on average)."""
    from lit_llm.checkpoint import load_tokenizer

    other = save_model(tmp_path / "other.ckpt", load_tokenizer(base_checkpoint), seed=1)
    path = compare_checkpoints([str(base_checkpoint), str(other)], tasks=["add", "count"], per_task=3,
                               max_new_tokens=4, output=str(tmp_path / "out"))  # fmt: skip
    table = json.loads((tmp_path / "out" / "compare.json").read_text())["table"]
    assert [row["checkpoint"] for row in table] == [str(base_checkpoint), str(other)]
    assert table[0]["win_rate_verifier"] == 0.5 and table[0]["kl_to_baseline"] == pytest.approx(0.0, abs=1e-6)
    assert table[1]["kl_to_baseline"] > 0 and 0 <= table[1]["win_rate_verifier"] <= 1
    assert path.read_text().count("**What is") + path.read_text().count("**How many") == 5
    text = path.read_text()
    assert "| Δ exact match [95% CI] |" in text and "| Δ verifier reward [95% CI] |" in text
    assert "(B=10000 resamples, seed 0)" in text and "pass@" not in text  # samples=1: no pass@k column
    assert "| checkpoint | add (n=3) | count (n=3) | all (n=6) |" in text.split("## Exact match per task")[1]
    assert "## Verifier reward per task" in text
    assert list(table[1]["per_task"]) == ["add", "count", "all"] and table[0]["delta_exact_match_ci"] == [0.0, 0.0]
    low, high = table[1]["delta_verifier_reward_ci"]
    assert low <= table[1]["delta_verifier_reward"] <= high
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_pass_at_k_samples_leave_the_main_answers_alone(base_checkpoint, tmp_path: Path):  # noqa: F811
    """samples=3 draws 3 more answers per prompt for pass@k; the main answers (and so every other metric) are the
    ones samples=1 gives at the same temperature and seed."""
    kwargs = dict(tasks=["add", "upper"], per_task=2, max_new_tokens=3, temperature=1.0, seed=5, bootstrap=100)
    compare_checkpoints([str(base_checkpoint)], output=str(tmp_path / "one"), **kwargs)
    path = compare_checkpoints([str(base_checkpoint)], samples=3, output=str(tmp_path / "three"), **kwargs)
    one, three = (json.loads((tmp_path / d / "compare.json").read_text()) for d in ("one", "three"))
    model = str(base_checkpoint)
    assert three["models"][model]["responses"] == one["models"][model]["responses"]
    assert three["table"][0]["verifier_reward"] == one["table"][0]["verifier_reward"]
    assert [len(s) for s in three["models"][model]["sample_verifier"]] == [3] * 4
    row = three["table"][0]
    assert 0 <= row["pass_at_1"] <= row["pass_at_k"] <= 1 and three["pass_at_k"]["k"] == 3
    assert three["settings"]["samples"] == 3 and three["bootstrap"]["resamples"] == 100
    assert "| pass@1 (n=3) | pass@3 |" in path.read_text() and "pass_at_1" not in one["table"][0]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"samples": 0}, "samples must be at least 1, got 0"),
     ({"bootstrap": 0}, "bootstrap must be at least 1 resample, got 0"),
     ({"samples": 2}, "samples 2 > 1 draws answers for pass@k and needs temperature > 0, got temperature 0.0")],
)  # fmt: skip
def test_bad_sampling_or_bootstrap_options_fail_before_loading(tmp_path: Path, capsys, options, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        compare_checkpoints([str(tmp_path / "missing")], output=str(tmp_path / "o"), **options)
    argv = ["compare", "--checkpoints", f"[{tmp_path / 'missing'}]"]
    with pytest.raises(SystemExit):
        main([*argv, *(arg for key, value in options.items() for arg in (f"--{key}", str(value)))])
    assert f"lit-llm: error: {message}" in capsys.readouterr().err


def test_bad_input_gives_one_clear_message(base_checkpoint, tmp_path: Path):  # noqa: F811
    reward = torch.load(base_checkpoint, weights_only=True)
    reward["lit_llm"] = {**reward["lit_llm"], "stage": "reward"}
    torch.save(reward, tmp_path / "reward.ckpt")
    with pytest.raises(CheckpointError, match="is a reward-model checkpoint"):
        compare_checkpoints([str(base_checkpoint), str(tmp_path / "reward.ckpt")], per_task=1,
                            output=str(tmp_path / "o"))  # fmt: skip
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        compare_checkpoints([str(tmp_path / "missing")], per_task=1, output=str(tmp_path / "o"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": ""}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl:2.*empty"):
        load_prompts(prompts)
    prompts.write_text('{"prompt": "What is 2 + 2?"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"prompts.jsonl:2"):
        load_prompts(prompts)
