"""Scoring models on the built-in verifiable tasks: greedy or sampled answers, verifier rewards, exact match per task
and, with several samples per prompt, pass@1 and pass@k."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lit_llm.errors import ConfigError
from lit_llm.tasks import get_task, task_records
from lit_llm.text.templates import PromptStyle, load_style
from lit_llm.rollout.sampler import RolloutSampler


@dataclass
class TaskScores:
    """Answers and their scores: per task (and "all") the number `n` of answers scored, exact-match rate and mean
    reward; with k > 1 samples per prompt also the number of `prompts` and their `pass_at_1` and `pass_at_{k}`."""

    responses: list[str]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)


def score_answers(
    model: Any,
    tokenizer: Any,
    style: PromptStyle,
    conversations: list[list[dict[str, Any]]],
    tasks: list[str | None],
    max_new_tokens: int = 32,
    batch_size: int = 64,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    engine: Any = None,
) -> TaskScores:
    """Answer each conversation (greedily, or `samples` times at `temperature`) and score the answers of task
    prompts with their task's verifier (the last user message is the task prompt); conversations with task None
    are answered but not scored. Scores average over all samples; `responses` are the first sample's. With
    `samples` k > 1 (which needs temperature > 0) each task also gets pass@1 and pass@k over the k answers of each
    prompt, the unbiased estimator of Chen et al. (2021) averaged over the prompts (an answer passes when its
    verifier reward is 1.0). Sample j of the batch starting at prompt `start` is drawn with seed
    `seed + 1000 * j + start`, so reruns give the same answers."""
    check_sampling(samples, temperature)
    responses: list[str] = []
    sums: dict[str, list[float]] = {}
    passed = [0] * len(conversations)  # per prompt, its answers with verifier reward 1.0
    sampler = RolloutSampler.for_style(tokenizer, style, max_new_tokens, temperature=temperature, engine=engine)
    for sample in range(samples):  # check_sampling: samples > 1 only at temperature > 0
        answers: list[str] = []
        for start in range(0, len(conversations), batch_size):
            batch = conversations[start : start + batch_size]
            answers += sampler.answer(model, batch, style, seed=seed + 1000 * sample + start)
        responses = responses or answers
        for i, (messages, task, response) in enumerate(zip(conversations, tasks, answers)):
            if task is None:
                continue
            reward = get_task(task).verify(messages[-1]["content"], response)
            passed[i] += reward == 1.0
            for key in (task, "all"):
                n, exact, total = sums.get(key, (0, 0.0, 0.0))
                sums[key] = (n + 1, exact + (reward == 1.0), total + reward)
    scores = {k: {"n": n, "exact_match": exact / n, "reward": total / n} for k, (n, exact, total) in sums.items()}
    if samples > 1:
        from lit_llm.metrics import pass_at_k

        for group, entry in scores.items():
            counts = [c for c, t in zip(passed, tasks) if t is not None and group in ("all", t)]
            entry["prompts"] = len(counts)
            for k in (1, samples):
                entry[f"pass_at_{k}"] = sum(pass_at_k(samples, c, k) for c in counts) / len(counts)
    if "all" in scores:  # last, after the tasks in the order they came
        scores["all"] = scores.pop("all")
    return TaskScores(responses, scores)


def check_sampling(samples: int, temperature: float) -> None:
    """Raise ConfigError unless `samples` is at least 1, and temperature > 0 when samples > 1 (for pass@k)."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if samples > 1 and temperature <= 0:
        raise ConfigError(f"samples {samples} > 1 draws answers for pass@k and needs temperature > 0, got "
                          f"temperature {temperature}")  # fmt: skip


def evaluate_checkpoint(
    checkpoint: str,
    split: str = "test",
    tasks: list[str] | None = None,
    per_task: int = 100,
    prompt_style: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
    temperature: float = 0.0,
    samples: int = 1,
    engine: str = "native",
) -> TaskScores:
    """Score a checkpoint on `per_task` prompts of each task's `split`, asked in the checkpoint's prompt style
    (or `prompt_style`; "alpaca" for a checkpoint trained without one, e.g. straight from pretraining); answers
    are greedy, or `samples` per prompt at `temperature` (the same seeds for every checkpoint); with samples k > 1
    the scores also hold pass@1 and pass@k per task (see `score_answers`).

    Args:
        checkpoint: a lit_llm checkpoint (.ckpt file or run folder).
        split: task split to ask: "test" (held out from training and validation), "val" or "train".
        tasks: tasks to ask (None: all built-in tasks).
        per_task: prompts per task.
        prompt_style: style to ask in; None uses the checkpoint's own, and alpaca for one without (pretraining).
        max_new_tokens: longest answer.
        batch_size: prompts answered at once.
        seed: seed of the prompts drawn from the split.
        device: "cpu" or "cuda".
        temperature: 0 answers greedily; above 0, answers are sampled (the same seeds for every checkpoint).
        samples: answers sampled per prompt (k > 1 needs temperature > 0); scores average over them, and k > 1
            adds pass@1 and pass@k (Chen et al.'s unbiased estimator over each prompt's k answers).
        engine: "native" (lit_llm's KV-cache sampler) or "vllm" (vLLM, `lit_llm[vllm]`; the model must have a
            Llama, Qwen2 or GPT-2 layout).
    """
    from lit_llm.checkpoint import load_bundle
    from lit_llm.rollout.engines import make_engine

    check_sampling(samples, temperature)

    bundle = load_bundle(checkpoint)
    model, tokenizer = bundle.model, bundle.tokenizer
    style = load_style(prompt_style) if prompt_style else bundle.style_or("alpaca")
    records = task_records(split, tasks, per_task=per_task, seed=seed)
    conversations = [[{"role": "user", "content": r["instruction"]}] for r in records]
    return score_answers(
        model.to(device), tokenizer, style, conversations, [r["task"] for r in records],
        max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, samples=samples,
        engine=make_engine(engine),
    )


def format_scores(columns: dict[str, TaskScores], metric: str = "exact_match", count: str = "n") -> str:
    """A table of `metric` with one row per task and one column per scored model; the `n` column shows each task's
    `count` (answers "n", or "prompts" for pass@k)."""
    names = list(columns)
    tasks = list(dict.fromkeys(t for scores in columns.values() for t in scores.scores))
    width = max([len(t) for t in tasks] + [4])
    widths = [max(len(n), 8) for n in names]
    lines = [f"{'task':<{width}}  {'n':>5}  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for task in tasks:
        first = next(s.scores[task] for s in columns.values() if task in s.scores)
        cells = []
        for name, w in zip(names, widths):
            value = columns[name].scores.get(task, {}).get(metric)
            cells.append(f"{value:>{w}.3f}" if value is not None else " " * (w - 1) + "-")
        lines.append(f"{task:<{width}}  {int(first[count]):>5}  " + "  ".join(cells))
    return "\n".join(lines)


def evaluate_checkpoints(checkpoints: list[str], device: str = "auto", **kwargs: Any) -> dict[str, TaskScores]:
    """Each checkpoint's exact match (and mean verifier reward; pass@1 and pass@k with --samples k > 1) on the
    built-in verifiable tasks (`lit-llm evaluate` prints them as tables).

    Args:
        checkpoints: lit_llm checkpoints (.ckpt files or run folders), one column each.
        device: "auto", "cpu" or "cuda".
        **kwargs: the options of `evaluate_checkpoint` (split, tasks, per_task, prompt_style, ...).
    """
    import torch

    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {path: evaluate_checkpoint(path, device=device, **kwargs) for path in checkpoints}
