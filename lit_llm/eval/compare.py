"""`lit-llm compare`: several checkpoints answer the same held-out prompts with the same sampling settings; a table
of verifier accuracy, reward-model score, win rate against a baseline, KL to the baseline and response length, with
example answers side by side, written as Markdown, JSON and a bar chart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lit_llm.errors import CheckpointError, DataError


@dataclass
class Verdicts:
    """Pairwise outcomes of a model against the baseline on the same prompts."""

    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def win_rate(self) -> float:
        """(wins + ties / 2) / comparisons: ties count half, so equal models score 0.5."""
        n = self.wins + self.ties + self.losses
        return (self.wins + 0.5 * self.ties) / n if n else float("nan")


def verdicts(scores: list[float | None], baseline: list[float | None]) -> Verdicts:
    """Count wins, ties and losses of `scores` against `baseline`, prompt by prompt; None (unscored) is skipped."""
    out = Verdicts()
    for a, b in zip(scores, baseline):
        if a is None or b is None:
            continue
        if a > b:
            out.wins += 1
        elif a < b:
            out.losses += 1
        else:
            out.ties += 1
    return out


@dataclass
class ModelResult:
    checkpoint: str
    stage: str | None
    responses: list[str]
    verifier: list[float | None]
    reward: list[float] | None = None
    kl_to_baseline: float | None = None
    mean_length: float = 0.0
    win_rate: dict[str, dict[str, float]] = field(default_factory=dict)

    def mean(self, values: list[float | None] | None) -> float | None:
        kept = [v for v in values or [] if v is not None]
        return sum(kept) / len(kept) if kept else None


def load_prompts(path: str | Path) -> list[tuple[list[dict[str, Any]], str | None]]:
    """(conversation, task) pairs from a prompt file (JSON Lines/JSON/Parquet/CSV records as PromptDataModule reads
    them); a malformed record raises DataError naming its file and line."""
    from lit_llm.data.conversations import RecordError, resolve_roles
    from lit_llm.data.prompts import prompt_messages, resolve_prompt_fields
    from lit_llm.data.sources import iter_records

    fields, roles = resolve_prompt_fields(None), resolve_roles(None)
    out = []
    for location, record in iter_records([str(path)], strict=True):
        try:
            messages, _ = prompt_messages(record, fields, roles)
        except RecordError as exc:
            raise DataError(f"{location}: {exc.detail}") from None
        task = record.get("task") if isinstance(record.get("task"), str) else None
        out.append((messages, task))
    if not out:
        raise DataError(f"{path} holds no prompts")
    return out


def _response_logps(model: Any, rows: list[list[int]], responses: list[list[int]], temperature: float) -> list[float]:
    import torch

    from lit_llm.stages.rollouts import layout, response_logps

    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = layout(rows[start : start + 32], responses[start : start + 32], 0, torch.device("cpu"))
            logps, _, _ = response_logps(model, batch["ids"], batch["valid"], batch["P"], model.config.vocab_size,
                                         temperature)  # fmt: skip
            mask = batch["valid"][:, batch["P"] :]
            out += (logps * mask).sum(1).tolist()
    return out


def compare_checkpoints(
    checkpoints: list[str],
    baseline: str | None = None,
    split: str = "test",
    tasks: list[str] | None = None,
    per_task: int = 20,
    prompts: str | None = None,
    reward_model: str | None = None,
    temperature: float = 0.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    examples: int = 5,
    output: str = "reports/compare",
    progress: bool = True,
) -> Path:
    """Answer the same prompts with every checkpoint and write compare.md, compare.json and compare.png to `output`.

    Args:
        checkpoints: policy checkpoints (SFT, DPO, ORPO, PPO, ...; files or run folders).
        baseline: the checkpoint win rates and KL are measured against (default: the first).
        split: split of the built-in tasks to ask when `prompts` is not given.
        tasks: built-in tasks to ask (None: all).
        per_task: prompts per built-in task.
        prompts: a prompt file instead (records with `prompt`, `messages` or `instruction`; an optional `task`).
        reward_model: a RewardModule checkpoint to score every answer with (also a win-rate judge).
        temperature: 0 answers greedily; above 0 samples with the same seed for every model.
        max_new_tokens: longest answer.
        seed: seed of the sampling.
        examples: prompts shown with every model's answer side by side.
        output: folder to write the report to.
        progress: show a progress bar over the checkpoints.
    """
    from tqdm import tqdm

    from lit_llm.checkpoint import load_model, meta_tokenizer
    from lit_llm.data.tasks import TASKS, task_records
    from lit_llm.data.templates import load_style, prompt_ids, stop_ids
    from lit_llm.generation import _prompt_room, generate

    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    baseline = baseline or checkpoints[0]
    if baseline not in checkpoints:
        checkpoints = [baseline, *checkpoints]
    if prompts:
        items = load_prompts(prompts)
    else:
        items = [([{"role": "user", "content": r["instruction"]}], r["task"])
                 for r in task_records(split, tasks, per_task=per_task)]  # fmt: skip
    conversations = [messages for messages, _ in items]
    scorer = None
    if reward_model:
        from lit_llm.stages.reward import load_reward_model

        scorer = load_reward_model(reward_model)
    results: dict[str, ModelResult] = {}
    models: dict[str, tuple[Any, list[list[int]], list[list[int]], Any]] = {}
    for path in tqdm(checkpoints, desc="answering", unit="model", leave=False, disable=not progress):
        model, meta = load_model(path)
        if meta.get("stage") == "reward":
            raise CheckpointError(f"{path} is a reward-model checkpoint; compare answers of policies (pass it as "
                                  "--reward_model to score them)")  # fmt: skip
        tokenizer = meta_tokenizer(meta, path)
        style = load_style(meta.get("prompt_style") or "alpaca")
        room = _prompt_room(model, max_new_tokens)
        rows = [prompt_ids(tokenizer, style, m)[-room:] for m in conversations]
        answers = generate(model, rows, max_new_tokens=max_new_tokens, temperature=temperature, top_k=None,
                           stop_tokens=stop_ids(tokenizer, style), seed=seed)  # fmt: skip
        texts = [tokenizer.decode(a) for a in answers]
        verifier = [TASKS[t].verify(m[-1]["content"], x) if t in TASKS else None
                    for (m, t), x in zip(items, texts)]  # fmt: skip
        mean_length = sum(map(len, answers)) / len(answers)
        result = ModelResult(path, meta.get("stage"), texts, verifier, mean_length=mean_length)
        if scorer is not None:
            result.reward = scorer.score(conversations, texts).tolist()
        results[path], models[path] = result, (model, rows, answers, tokenizer)
    base_model, _, _, base_tokenizer = models[baseline]
    kl_temperature = temperature if temperature > 0 else 1.0
    for path, (model, rows, answers, tokenizer) in models.items():
        result = results[path]
        for judge, values in (("verifier", "verifier"), ("reward_model", "reward")):
            mine, theirs = getattr(result, values), getattr(results[baseline], values)
            if mine is not None and any(v is not None for v in mine):
                v = verdicts(mine, theirs)
                result.win_rate[judge] = {**asdict(v), "win_rate": v.win_rate}
        if tokenizer.to_json() == base_tokenizer.to_json():
            own = _response_logps(model, rows, answers, kl_temperature)
            base = _response_logps(base_model, rows, answers, kl_temperature)
            result.kl_to_baseline = sum(a - b for a, b in zip(own, base)) / len(own)
    return write_comparison(results, baseline, conversations, examples, Path(output))


def write_comparison(results: dict[str, ModelResult], baseline: str, conversations: list, examples: int,
                     out: Path) -> Path:  # fmt: skip
    """compare.md (table and side-by-side answers), compare.json and compare.png (bar chart) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, r in results.items():
        exact = r.mean([None if v is None else float(v == 1.0) for v in r.verifier])
        rows.append({
            "checkpoint": path, "stage": r.stage, "verifier_exact_match": exact, "verifier_reward": r.mean(r.verifier),
            "reward_model_score": r.mean(r.reward), "win_rate_verifier": r.win_rate.get("verifier", {}).get("win_rate"),
            "win_rate_reward_model": r.win_rate.get("reward_model", {}).get("win_rate"),
            "kl_to_baseline": r.kl_to_baseline, "mean_length": r.mean_length,
        })  # fmt: skip
    columns = list(rows[0])[1:]
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    md = [f"# Comparison (baseline {baseline})", "", "| checkpoint | " + " | ".join(columns) + " |",
          "|---" * (len(columns) + 1) + "|"]  # fmt: skip
    md += ["| " + " | ".join(fmt(row[c]) for c in ["checkpoint", *columns]) + " |" for row in rows]
    md += ["", "Win rate = (wins + ties / 2) / prompts against the baseline; KL = mean over the model's answers of "
           "log p_model - log p_baseline (nats per answer).", "", "## Example answers", ""]  # fmt: skip
    for i, messages in enumerate(conversations[:examples]):
        md.append(f"**{messages[-1]['content']}**")
        md.append("")
        md += [f"- `{path}`: {r.responses[i]!r}" for path, r in results.items()]
        md.append("")
    (out / "compare.md").write_text("\n".join(md) + "\n")
    details = {path: asdict(r) for path, r in results.items()}
    (out / "compare.json").write_text(json.dumps({"baseline": baseline, "table": rows, "models": details}, indent=1))
    _bar_chart(rows, out / "compare.png")
    return out / "compare.md"


def _bar_chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("verifier_exact_match", "verifier_reward", "win_rate_verifier", "win_rate_reward_model")
               if any(row[m] is not None for row in rows)]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        values = [row[m] if row[m] is not None else 0.0 for m in metrics]
        ax.bar([j + i * width for j in range(len(metrics))], values, width, label=Path(row["checkpoint"]).parent.name
               or row["checkpoint"])  # fmt: skip
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, fontsize=8)
    ax.set(ylim=(0, 1), title="Comparison on held-out prompts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
