"""configs/grpo/gsm8k-smollm.yaml against a local GSM8K-shaped data set (no hub access): its `hf:NAME@CONFIG:SPLIT`
sources load the named configuration, its fields make the question the prompt and the "#### N" answer the
reference, its prompt style renders ChatML, and its rewards score a right and a wrong answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lit_llm.data.rl_prompts import PromptDataModule
from lit_llm.errors import DataError
from lit_llm.prepare.sources import _parse_hf
from lit_llm.rewards import RewardSet, Rollouts
from lit_llm.text.templates import load_style, prompt_ids
from lit_llm.text.tokenizer import SPECIAL_TOKENS, train_bpe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "grpo" / "gsm8k-smollm.yaml"
RECORDS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 12 eggs. How many eggs are in 3 boxes?", "answer": "12 * 3 = 36\n#### 36"},
]  # fmt: skip


def local_gsm8k(root: Path) -> Path:
    """A folder laid out like the hub data set: two configurations (main, socratic) of train and test files."""
    for config in ("main", "socratic"):
        for split in ("train", "test"):
            path = root / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = RECORDS if config == "main" else [{"question": "socratic?", "answer": "#### 0"}]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = {"configs": [{"config_name": c, "data_files": [{"split": s, "path": f"{c}/{s}.jsonl"}
                                                         for s in ("train", "test")]} for c in ("main", "socratic")]}
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n")
    return root


def test_hf_sources_name_a_configuration():
    assert _parse_hf("hf:openai/gsm8k@main:test") == ("openai/gsm8k", {"name": "main"}, "test")
    assert _parse_hf("hf:openai/gsm8k") == ("openai/gsm8k", {}, "train")
    with pytest.raises(DataError, match="hf:NAME@CONFIG"):
        _parse_hf("hf:openai/gsm8k@:train")


def test_the_gsm8k_config_builds_prompts_with_references_and_scores_them(tmp_path):
    pytest.importorskip("math_verify")
    config = yaml.safe_load(CONFIG.read_text())
    data = config["data"]["init_args"]
    assert data["train"] == "hf:openai/gsm8k@main:train" and data["val"] == "hf:openai/gsm8k@main:test"
    root = local_gsm8k(tmp_path / "gsm8k")
    texts = [r["question"] + " " + r["answer"] for r in RECORDS] * 50
    tokenizer = train_bpe(texts, vocab_size=400, special_tokens=SPECIAL_TOKENS + ["<|im_start|>", "<|im_end|>"])
    (tmp_path / "tokenizer.json").write_text(tokenizer.to_json())
    args = {**data, "train": data["train"].replace("openai/gsm8k", str(root)),
            "val": data["val"].replace("openai/gsm8k", str(root)), "tokenizer": str(tmp_path / "tokenizer.json"),
            "max_prompt_length": 200}  # fmt: skip
    dm = PromptDataModule(**args)
    dm.setup("fit")
    prompts = dm.train_examples
    assert [p.messages[-1]["content"] for p in prompts] == [r["question"] for r in RECORDS]
    assert [p.reference for p in prompts] == [r["answer"] for r in RECORDS]
    style = load_style(data["prompt_style"])
    rendered = tokenizer.decode(prompt_ids(tokenizer, style, prompts[0].messages), skip_special_tokens=False)
    assert rendered == f"<|im_start|>user\n{RECORDS[0]['question']}<|im_end|>\n<|im_start|>assistant\n"
    model = config["model"]["init_args"]
    rewards = RewardSet(model["reward_functions"], weights=model["reward_weights"])
    answers = ["3 + 4 = 7, so \\boxed{7}", "He has 8 apples."]
    rollouts = Rollouts([p.messages for p in prompts[:1]] * 2, answers, [[1]] * 2, [[2]] * 2,
                        [prompts[0].reference] * 2)  # fmt: skip
    total, valid, per_source = rewards.score(rollouts, clip=10.0)
    assert valid.tolist() == [True, True]
    assert total.tolist() == pytest.approx([1.1, 0.0])
    assert per_source["math_reward"].tolist() == [1.0, 0.0]
