"""`lit-llm compare`: several checkpoints answer the same held-out prompts with the same sampling settings; a table
of verifier exact match and reward (overall and per task, with paired bootstrap intervals of the difference to a
baseline), reward-model score, win rate against the baseline, KL to the baseline, response length and optionally
pass@k, with example answers side by side, written as Markdown, JSON and a per-task bar chart."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_llm.errors import ConfigError, DataError
from lit_llm.eval.stats import bootstrap_mean_interval, paired_bootstrap, pass_at_k


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
    sample_verifier: list[list[float] | None] | None = None  # per prompt, the verifier rewards of the pass@k samples

    def mean(self, values: list[float | None] | None) -> float | None:
        kept = [v for v in values or [] if v is not None]
        return sum(kept) / len(kept) if kept else None


def load_prompts(path: str | Path) -> list[tuple[list[dict[str, Any]], str | None]]:
    """(conversation, task) pairs from a prompt file (JSON Lines/JSON/Parquet/CSV records as PromptDataModule reads
    them); a malformed record raises DataError naming its file and line."""
    from lit_llm.text.conversations import RecordError, resolve_roles
    from lit_llm.data.rl_prompts import prompt_messages, resolve_prompt_fields
    from lit_llm.prepare.sources import iter_records

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

    from lit_llm.rollout.layout import layout, response_logps

    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            batch = layout(rows[start : start + 32], responses[start : start + 32], 0, torch.device("cpu"))
            logps, _, _ = response_logps(model, batch["ids"], batch["valid"], batch["P"], model.config.vocab_size,
                                         temperature)  # fmt: skip
            mask = batch["valid"][:, batch["P"] :]
            out += (logps * mask).sum(1).tolist()
    return out


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _groups(tasks: Sequence[str | None]) -> list[str]:
    """The tasks that occur, built-in ones in TASKS order and others as they first come, then "all"."""
    from lit_llm.tasks import TASKS

    seen = list(dict.fromkeys(t for t in tasks if t is not None))
    return [t for t in TASKS if t in seen] + [t for t in seen if t not in TASKS] + ["all"]


def score_table(
    tasks: Sequence[str | None],
    verifier: dict[str, Sequence[float | None]],
    baseline: str,
    bootstrap: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, dict[str, Any]]]:
    """`table[checkpoint][group]` for each task that occurs and "all" (last): `n` scored prompts, `exact_match`
    (share with verifier reward 1.0) and mean `verifier_reward`, each with its percentile-bootstrap `*_ci`, and the
    paired differences to `baseline` over the `paired_n` prompts both scored, `delta_exact_match` and
    `delta_verifier_reward`, with paired-bootstrap `*_ci`. `tasks[i]` is prompt i's task and `verifier[c][i]` the
    reward of checkpoint c's answer to it; None is unscored and left out; a scored prompt of task None counts in
    "all" only. Means of nothing are None."""
    base = verifier[baseline]
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for path, scores in verifier.items():
        if len(scores) != len(tasks):
            raise ValueError(f"{path}: {len(scores)} scores for {len(tasks)} prompts")
        table[path] = {}
        for group in _groups(tasks):
            keep = [i for i, t in enumerate(tasks) if scores[i] is not None and group in ("all", t)]
            paired = [i for i in keep if base[i] is not None]
            entry: dict[str, Any] = {"n": len(keep)}
            reward = np.array([scores[i] for i in keep], dtype=float)
            for name, values in (("exact_match", reward == 1.0), ("verifier_reward", reward)):
                mean, low, high = bootstrap_mean_interval(values.astype(float), bootstrap, seed, confidence)
                entry[name], entry[f"{name}_ci"] = _num(mean), [_num(low), _num(high)]
            entry["paired_n"] = len(paired)
            mine, theirs = (np.array([s[i] for i in paired], dtype=float) for s in (scores, base))
            for name, a, b in (("exact_match", mine == 1.0, theirs == 1.0), ("verifier_reward", mine, theirs)):
                diff, low, high = paired_bootstrap(a.astype(float), b.astype(float), bootstrap, seed, confidence)
                entry[f"delta_{name}"], entry[f"delta_{name}_ci"] = _num(diff), [_num(low), _num(high)]
            table[path][group] = entry
    return table


def task_table(
    prompts: Sequence[str],
    responses: dict[str, Sequence[str]],
    baseline: str,
    bootstrap: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, dict[str, Any]]]:
    """`score_table` of fixed answers, `responses[checkpoint][i]` answering `prompts[i]`: a prompt's task is
    `task_of(prompt)` and its verifier scores the answers; answers to prompts of no task are unscored."""
    from lit_llm.tasks import task_of

    found = [task_of(p) for p in prompts]
    verifier = {}
    for path, answers in responses.items():
        if len(answers) != len(prompts):
            raise ValueError(f"{path}: {len(answers)} responses for {len(prompts)} prompts")
        verifier[path] = [None if t is None else t.verify(p, a) for t, p, a in zip(found, prompts, answers)]
    tasks = [None if t is None else t.name for t in found]
    return score_table(tasks, verifier, baseline, bootstrap, seed, confidence)


def pass_table(tasks: Sequence[str | None], samples: Sequence[Sequence[float] | None]) -> dict[str, dict[str, Any]]:
    """Per task and "all": `n` prompts with samples, and `pass_at_1` and `pass_at_k` (k = the n samples of each
    prompt), the unbiased estimator of Chen et al. (2021) averaged over the prompts; a sample passes when its
    verifier reward is 1.0. `samples[i]` holds the rewards of prompt i's samples, None for an unscored prompt."""
    out = {}
    for group in _groups(tasks):
        rows = [s for s, t in zip(samples, tasks) if s is not None and group in ("all", t)]
        counts = [(len(s), sum(v == 1.0 for v in s)) for s in rows]
        mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
        out[group] = {"n": len(rows), "pass_at_1": mean([pass_at_k(n, c, 1) for n, c in counts]),
                      "pass_at_k": mean([pass_at_k(n, c, n) for n, c in counts])}  # fmt: skip
    return out


def _verify(items: list[tuple[list[dict[str, Any]], str | None]], texts: list[str]) -> list[float | None]:
    from lit_llm.tasks import TASKS

    return [TASKS[t].verify(m[-1]["content"], x) if t in TASKS else None for (m, t), x in zip(items, texts)]


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
    samples: int = 1,
    bootstrap: int = 10000,
    engine: str = "native",
) -> Path:
    """Answer the same prompts with every checkpoint and write compare.md, compare.json and compare.png to `output`.

    Exact match (verifier reward 1.0) and mean verifier reward are reported overall and per task, with the paired
    difference to the baseline on the same prompts and its 95% percentile bootstrap interval.

    Args:
        checkpoints: policy checkpoints (SFT, DPO, ORPO, PPO, ...; files or run folders).
        baseline: the checkpoint win rates, KL and differences are measured against (default: the first).
        split: split of the built-in tasks to ask when `prompts` is not given.
        tasks: built-in tasks to ask (None: all).
        per_task: prompts per built-in task.
        prompts: a prompt file instead (records with `prompt`, `messages` or `instruction`; an optional `task`,
            else a prompt's task is the built-in task its wording matches; prompts of no task are not scored).
        reward_model: a RewardModule checkpoint to score every answer with (also a win-rate judge).
        temperature: 0 answers greedily; above 0 samples with the same seed for every model.
        max_new_tokens: longest answer.
        seed: seed of the sampling and of the bootstrap.
        examples: prompts shown with every model's answer side by side.
        output: folder to write the report to.
        progress: show a progress bar over the checkpoints.
        samples: k > 1 also draws k answers per prompt at `temperature` (which must be > 0; seeds seed + 1 to
            seed + k, the same for every model) for pass@1 and pass@k; every other metric uses the one main answer.
        bootstrap: resamples of the prompts for the 95% intervals.
        engine: "native" (lit_llm's KV-cache sampler) or "vllm" (vLLM, `lit_llm[vllm]`; the model must have a
            Llama, Qwen2 or GPT-2 layout).
    """
    from tqdm import tqdm

    from lit_llm.checkpoint import load_bundle
    from lit_llm.tasks import TASKS, task_of, task_records
    from lit_llm.rollout.engines import make_engine
    from lit_llm.rollout.sampler import RolloutSampler

    generator = make_engine(engine)  # one engine for every checkpoint: synced to each in turn
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be at least 1 resample, got {bootstrap}")
    if samples > 1 and temperature <= 0:
        raise ConfigError(f"samples {samples} > 1 draws answers for pass@k and needs temperature > 0, got "
                          f"temperature {temperature}")  # fmt: skip
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
    items = [(m, t if t in TASKS else getattr(task_of(m[-1]["content"]), "name", None)) for m, t in items]
    conversations = [messages for messages, _ in items]
    scorer = None
    if reward_model:
        from lit_llm.rewards import load_reward_model

        scorer = load_reward_model(reward_model)
    results: dict[str, ModelResult] = {}
    models: dict[str, tuple[Any, list[list[int]], list[list[int]], Any]] = {}
    for path in tqdm(checkpoints, desc="answering", unit="model", leave=False, disable=not progress):
        bundle = load_bundle(path)  # a reward-model checkpoint is refused, naming --reward_model's use
        model, tokenizer, style = bundle.model, bundle.tokenizer, bundle.style_or("alpaca")
        sampler = RolloutSampler.for_style(tokenizer, style, max_new_tokens, temperature=temperature, engine=generator)
        if generator is not None:
            generator.sync(model)
        rows = sampler.prompts(model, conversations, style, warn=False)
        answer = lambda s: sampler.generate(model, rows, s)  # noqa: E731
        answers = answer(seed)
        texts = [tokenizer.decode(a) for a in answers]
        mean_length = sum(map(len, answers)) / len(answers)
        result = ModelResult(path, bundle.stage, texts, _verify(items, texts), mean_length=mean_length)
        if samples > 1:
            draws = [_verify(items, [tokenizer.decode(a) for a in answer(seed + 1 + j)]) for j in range(samples)]
            result.sample_verifier = [None if v is None else [d[i] for d in draws] for i, v in enumerate(draws[0])]
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
    settings = {"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed, "samples": samples,
                "prompts": prompts or f"built-in {split} split, {per_task} per task"}  # fmt: skip
    return write_comparison(results, baseline, conversations, examples, Path(output), tasks=[t for _, t in items],
                            bootstrap=bootstrap, seed=seed, settings=settings)  # fmt: skip


def _markdown(rows: list[dict[str, Any]], baseline: str, groups: list[str], counts: dict[str, int], level: str,
              method: str, k: int | None, temperature: Any) -> list[str]:  # fmt: skip
    f3 = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731

    def delta(row: dict[str, Any], name: str) -> str:
        if row["checkpoint"] == baseline:
            return "(baseline)"
        (low, high), value = row[f"delta_{name}_ci"], row[f"delta_{name}"]
        return "-" if value is None else f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"

    columns = [("checkpoint", lambda r: r["checkpoint"]), ("stage", lambda r: r["stage"] or "-"),
               ("exact match", lambda r: f3(r["verifier_exact_match"])),
               (f"Δ exact match [{level} CI]", lambda r: delta(r, "exact_match")),
               ("verifier reward", lambda r: f3(r["verifier_reward"])),
               (f"Δ verifier reward [{level} CI]", lambda r: delta(r, "verifier_reward")),
               ("win rate", lambda r: f3(r["win_rate_verifier"])), ("KL", lambda r: f3(r["kl_to_baseline"])),
               ("mean length", lambda r: f3(r["mean_length"]))]  # fmt: skip
    if k:
        columns += [(f"pass@1 (n={k})", lambda r: f3(r["pass_at_1"])), (f"pass@{k}", lambda r: f3(r["pass_at_k"]))]
    if any(r["reward_model_score"] is not None for r in rows):
        columns += [("reward model", lambda r: f3(r["reward_model_score"])),
                    ("reward-model win rate", lambda r: f3(r["win_rate_reward_model"]))]  # fmt: skip
    table = lambda heads, cells: ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"] + [  # noqa: E731
        "| " + " | ".join(c) + " |" for c in cells]  # fmt: skip
    md = [f"# Comparison (baseline {baseline})", "",
          f"## Overall: Δ = checkpoint - baseline on the same prompts, {level} CI by {method}", ""]  # fmt: skip
    md += table([h for h, _ in columns], [[f(r) for _, f in columns] for r in rows])
    tasks = [g for g in groups if g != "all"]
    for name, title, where in (("exact_match", "Exact match", "compare.json, error bars in compare.png"),
                               ("verifier_reward", "Verifier reward", "compare.json")):  # fmt: skip
        if tasks:
            md += ["", f"## {title} per task (n scored prompts; {level} bootstrap CIs in {where})", ""]
            md += table(["checkpoint", *(f"{g} (n={counts[g]})" for g in groups)],
                        [[r["checkpoint"], *(f3(r["per_task"][g][name]) for g in groups)] for r in rows])  # fmt: skip
    md += ["", "Exact match = share of scored prompts with verifier reward 1.0. Win rate = (wins + ties / 2) / "
           "prompts against the baseline; KL = mean over the model's answers of log p_model - log p_baseline (nats "
           "per answer)."]  # fmt: skip
    if k:
        md[-1] += (f" pass@1 and pass@{k}: {k} more answers per task prompt at temperature {temperature}, the "
                   "unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al. (2021) averaged over prompts (n samples,"
                   " c of them exact); the other columns score the main answer.")  # fmt: skip
    return md


def write_comparison(
    results: dict[str, ModelResult],
    baseline: str,
    conversations: list,
    examples: int,
    out: Path,
    *,
    tasks: Sequence[str | None] | None = None,
    bootstrap: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
    settings: dict[str, Any] | None = None,
) -> Path:
    """compare.md (tables and side-by-side answers), compare.json and compare.png (exact match per task) in `out`.

    `tasks[i]` is conversation i's task (default: `task_of` its last message); the bootstrap settings feed
    `score_table`."""
    from lit_llm.tasks import task_of
    from lit_llm.eval.plots import per_task_chart

    out.mkdir(parents=True, exist_ok=True)
    if tasks is None:
        tasks = [getattr(task_of(m[-1]["content"]), "name", None) for m in conversations]
    scores = score_table(tasks, {p: r.verifier for p, r in results.items()}, baseline, bootstrap, seed, confidence)
    k = next((len(s) for r in results.values() for s in r.sample_verifier or [] if s), None)
    rows = []
    for path, r in results.items():
        overall = scores[path]["all"]
        row = {
            "checkpoint": path, "stage": r.stage, "verifier_exact_match": overall["exact_match"],
            "verifier_reward": overall["verifier_reward"], "reward_model_score": r.mean(r.reward),
            "win_rate_verifier": r.win_rate.get("verifier", {}).get("win_rate"),
            "win_rate_reward_model": r.win_rate.get("reward_model", {}).get("win_rate"),
            "kl_to_baseline": r.kl_to_baseline, "mean_length": r.mean_length, "n_scored": overall["n"],
            **{key: overall[key] for key in ("delta_exact_match", "delta_exact_match_ci", "delta_verifier_reward",
                                             "delta_verifier_reward_ci")},
        }  # fmt: skip
        if r.sample_verifier is not None:
            for group, entry in pass_table(tasks, r.sample_verifier).items():
                scores[path][group].update(pass_at_1=entry["pass_at_1"], pass_at_k=entry["pass_at_k"])
            row.update(pass_at_1=overall["pass_at_1"], pass_at_k=overall["pass_at_k"])
        row["per_task"] = scores[path]
        rows.append(row)
    groups = list(scores[baseline])
    counts = {g: entry["n"] for g, entry in scores[baseline].items()}
    level = f"{confidence:.0%}"
    method = f"paired percentile bootstrap over prompts (B={bootstrap} resamples, seed {seed})"
    md = _markdown(rows, baseline, groups, counts, level, method, k, (settings or {}).get("temperature"))
    md += ["", "## Example answers", ""]
    for i, messages in enumerate(conversations[:examples]):
        md.append(f"**{messages[-1]['content']}**")
        md.append("")
        md += [f"- `{path}`: {r.responses[i]!r}" for path, r in results.items()]
        md.append("")
    (out / "compare.md").write_text("\n".join(md) + "\n")
    report = {
        "baseline": baseline, "settings": settings or {},
        "bootstrap": {"method": "percentile bootstrap over prompts, resampled with replacement; paired (the same "
                                "indices for both models) for the differences to the baseline",
                      "resamples": bootstrap, "seed": seed, "confidence": confidence},
        "pass_at_k": None if k is None else {"k": k, "n": k, "estimator": "1 - C(n-c, k) / C(n, k), Chen et al. "
                                             "2021, c = samples with verifier reward 1.0, averaged over prompts"},
        "table": rows, "models": {path: asdict(r) for path, r in results.items()},
    }  # fmt: skip
    (out / "compare.json").write_text(json.dumps(report, indent=1))
    title = f"Exact match per task ({level} percentile bootstrap CI, B={bootstrap}, seed {seed})"
    per_task_chart({path: scores[path] for path in results}, out / "compare.png", title)
    return out / "compare.md"
