"""`lit-llm compare`: win-rate arithmetic on fixed answers, KL to the baseline, outputs, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_llm.errors import CheckpointError, DataError
from lit_llm.eval.compare import ModelResult, compare_checkpoints, load_prompts, verdicts, write_comparison
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
    assert "| runs/ppo/x | ppo | 0.333 | 0.500 | 1.875 | 0.667 | 0.625 | 1.250 | 3.000 |" in text
    assert "- `runs/ppo/x`: 'B'" in text and "**q1**" in text and "**q2**" not in text
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
