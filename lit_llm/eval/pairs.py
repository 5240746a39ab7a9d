"""Preference pairs from a model's own answers: sample several answers per task prompt, verify them, and pair a
verified-correct answer (chosen) with one of the model's wrong answers (rejected).

On-policy rejections teach the preference stages about the mistakes the model actually makes; the reference
answer stands in for "chosen" when no sample was right, and a synthetic wrong answer (`Task.wrong_answer`) for
"rejected" when every sample was, so each prompt gives at least one pair. The counts say which was used how often.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lit_llm.tasks import get_task, task_records


@dataclass
class PairStats:
    checkpoint: str = ""
    split: str = ""
    output: str = ""
    prompts: int = 0
    pairs: int = 0
    samples: int = 0
    correct_samples: int = 0
    chosen_from_model: int = 0
    chosen_reference: int = 0
    rejected_from_model: int = 0
    rejected_synthetic: int = 0

    def summary(self) -> str:
        rate = self.correct_samples / max(1, self.samples)
        return (
            f"{self.pairs} pairs for {self.prompts} prompts from {self.samples} samples ({rate:.1%} correct); chosen: "
            f"{self.chosen_from_model} "
            f"sampled, {self.chosen_reference} reference; rejected: {self.rejected_from_model} sampled, "
            f"{self.rejected_synthetic} synthetic"
        )


def sample_pairs(
    model: Any,
    tokenizer: Any,
    style: Any,
    records: list[dict[str, str]],
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    pairs_per_prompt: int = 1,
    progress: bool = False,
    engine: Any = None,
) -> tuple[list[dict[str, str]], PairStats]:
    """{prompt, chosen, rejected, task} pairs for task records (`task_records`) from `samples` sampled answers: one
    per distinct wrong answer, up to `pairs_per_prompt`, each against a correct sample (in turn) or the reference
    answer; a prompt the model always got right gets one pair against a synthetic mistake."""
    from tqdm import tqdm

    from lit_llm.rollout.sampler import RolloutSampler

    conversations = [[{"role": "user", "content": r["instruction"]}] for r in records]
    answers: list[list[str]] = [[] for _ in records]
    sampler = RolloutSampler.for_style(tokenizer, style, max_new_tokens, temperature=temperature, engine=engine)
    batches = [(k, start) for k in range(samples) for start in range(0, len(records), batch_size)]
    for k, start in tqdm(batches, desc="sampling answers", unit="batch", leave=False, disable=not progress):
        batch = conversations[start : start + batch_size]
        outs = sampler.answer(model, batch, style, seed=seed + 1000 * k + start)
        for i, text in enumerate(outs):
            answers[start + i].append(text)
    stats, pairs = PairStats(), []
    rng = random.Random(seed)
    for record, sampled in zip(records, answers):
        task, prompt = get_task(record["task"]), record["instruction"]
        verdicts = [task.exact_match(prompt, a) for a in sampled]
        right = list(dict.fromkeys(a.strip() for a, ok in zip(sampled, verdicts) if ok))
        wrong = list(dict.fromkeys(a.strip() for a, ok in zip(sampled, verdicts) if not ok and a.strip()))
        rng.shuffle(wrong)
        stats.prompts += 1
        stats.samples += len(sampled)
        stats.correct_samples += sum(verdicts)
        rejected = wrong[:pairs_per_prompt] or [task.wrong_answer(prompt, rng)]
        for i, bad in enumerate(rejected):
            if right:
                chosen = right[i % len(right)]
                stats.chosen_from_model += 1
            else:
                chosen = record["output"]
                stats.chosen_reference += 1
            if wrong:
                stats.rejected_from_model += 1
            else:
                stats.rejected_synthetic += 1
            pairs.append({"prompt": prompt, "chosen": chosen, "rejected": bad, "task": record["task"]})
        stats.pairs += len(rejected)
    return pairs, stats


def write_pairs(
    checkpoint: str,
    output: str,
    split: str = "train",
    tasks: list[str] | None = None,
    per_task: int = 500,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    pairs_per_prompt: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    engine: str = "native",
) -> PairStats:
    """Write preference pairs on the built-in tasks from a checkpoint's own answers: for each prompt, sample answers
    in the checkpoint's prompt style, verify them, and pair a correct one (else the reference answer) with a wrong
    one (else a synthetic mistake). Pairs go to `output` as JSON Lines, the counts to `output`.stats.json; each file
    is written whole (to a temporary file renamed into place), so a reader never sees half of it.

    Args:
        checkpoint: a lit_llm checkpoint trained with a prompt style (SFT), .ckpt file or run folder.
        output: the JSON Lines file to write ({prompt, chosen, rejected, task} per line).
        split: task split to draw prompts from: "train", "val" or "test".
        tasks: tasks to use (None: all built-in tasks).
        per_task: prompts per task.
        samples: answers sampled per prompt.
        temperature: sampling temperature.
        max_new_tokens: longest answer.
        batch_size: prompts answered at once.
        seed: seed of the prompts and of the sampler.
        device: "auto", "cpu" or "cuda".
        pairs_per_prompt: most pairs per prompt, one per distinct wrong answer sampled.
        progress: show a progress bar over the sampling batches.
        overwrite: replace `output` when it already exists (without it, existing pairs are never overwritten).
        engine: "native" (lit_llm's KV-cache sampler) or "vllm" (vLLM, `lit_llm[vllm]`; the model must have a
            Llama, Qwen2 or GPT-2 layout).
    """
    import torch

    from lit_llm.atomic import OutputError, atomic_write, atomic_write_text
    from lit_llm.checkpoint import load_bundle
    from lit_llm.rollout.engines import make_engine

    path = Path(output)
    if path.is_dir():
        raise OutputError(f"--output {path} is a folder; name the JSON Lines file to write the pairs to")
    if path.exists() and not overwrite:  # checked before sampling, which takes a while
        raise OutputError(f"{path} already exists; pass --overwrite true to replace it")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    bundle = load_bundle(checkpoint)
    model, tokenizer, style = bundle.model, bundle.tokenizer, bundle.style_or("alpaca")
    records = task_records(split, tasks, per_task=per_task, seed=seed)
    pairs, stats = sample_pairs(
        model.to(device), tokenizer, style, records, samples, temperature, max_new_tokens, batch_size, seed,
        pairs_per_prompt, progress, make_engine(engine),
    )
    with atomic_write(path, "w") as f:
        for pair in pairs:
            f.write(json.dumps(pair) + "\n")
    stats.checkpoint, stats.split, stats.output = str(checkpoint), split, str(output)
    atomic_write_text(f"{path}.stats.json", json.dumps(asdict(stats)))
    return stats
