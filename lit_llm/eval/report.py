"""`lit-llm report`: a Markdown and HTML training report with PNG plots, built from runs' logged metrics.

Each run folder is searched for the CSV logs Lightning's CSVLogger writes (`**/metrics.csv`; the newest version
when there are several). Every plot of `PLOTS` whose metrics a run logged (for a stage's own plot, its metric in
`REQUIRES`) is drawn, one PNG per run and plot,
and a summary table gives, per run: the last and best loss, the last perplexity, the tokens seen and the wall
time of training.
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from lit_llm.errors import DataError

# (file stem, title, y label, metrics drawn as one line each); a plot is drawn when a run logged any of them.
PLOTS: list[tuple[str, str, str, list[str]]] = [
    ("loss", "Loss", "nats per token", ["train/loss", "val/loss", "loss"]),
    ("perplexity", "Validation perplexity", "perplexity", ["val/ppl"]),
    ("learning_rate", "Learning rate", "learning rate", ["train/lr", "lr"]),
    ("grad_norm", "Gradient norm", "global L2 norm", ["train/grad_norm"]),
    ("throughput", "Throughput", "tokens per second", ["train/device/items_per_sec"]),
    ("sft_accuracy", "Token accuracy and held-out exact match", "share", ["train/token_accuracy", "val/token_accuracy",
                                                                      "val/exact_match"]),
    ("reward_accuracy", "Reward model: pairwise accuracy", "share of pairs", ["train/accuracy", "val/accuracy"]),
    ("preference_margins", "DPO / ORPO: implicit reward margins", "margin", ["train/rewards/margins",
                                                                              "val/rewards/margins"]),
    ("preference_accuracy", "DPO / ORPO: implicit reward accuracy", "share of pairs",
     ["train/rewards/accuracies", "val/rewards/accuracies"]),
    ("ppo_reward", "PPO: reward", "score", ["objective/scores", "objective/rlhf_reward", "val/score"]),
    ("ppo_kl", "PPO: KL to the reference", "nats per response", ["objective/kl"]),
    ("grpo_reward", "GRPO / RLOO / REINFORCE++: reward", "reward", ["reward", "val/score", "val/reward"]),
    ("grpo_policy", "GRPO / RLOO / REINFORCE++: entropy, KL, clipping", "value",
     ["entropy", "kl", "clip_ratio/region_mean", "frac_reward_zero_std"]),
]  # fmt: skip
# Plots of one stage's metrics, drawn only for runs that logged the metric named here (another stage may log the
# plot's other, shared names such as val/score or val/reward).
REQUIRES = {"ppo_reward": "objective/scores", "ppo_kl": "objective/kl", "grpo_reward": "frac_reward_zero_std",
            "grpo_policy": "frac_reward_zero_std"}  # fmt: skip


@dataclass
class Run:
    """One run's logged metrics: per metric, its (step, value) points in logging order."""

    name: str
    metrics_file: Path
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def last(self, key: str) -> float | None:
        points = self.series.get(key)
        return points[-1][1] if points else None

    def best(self, key: str) -> float | None:
        points = self.series.get(key)
        return min(v for _, v in points) if points else None


def read_run(folder: str | Path) -> Run:
    """The metrics of the run in `folder` (its newest `metrics.csv`); DataError naming the folder without one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"run folder not found: {folder}")
    files = sorted(folder.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise DataError(f"{folder} holds no metrics.csv: log the run with a CSVLogger (as configs/ do) to report it")
    path = files[-1]
    run = Run(name=str(folder), metrics_file=path)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    run.series.setdefault(key, []).append((float(step or 0), number))
    if not run.series:
        raise DataError(f"{path} has no logged metrics (the run may have stopped before its first log step)")
    return run


def summary(run: Run) -> dict[str, float | None]:
    """Last and best loss (validation when logged, else training), last perplexity, tokens seen and the seconds
    spent training."""
    loss_key = "val/loss" if "val/loss" in run.series else "train/loss"
    wall = run.last("train/time")  # the throughput monitor's elapsed time
    if wall is None and "time/train" in run.series:  # PPO and GRPO time their phases per rollout batch
        wall = sum(v for key in ("time/generate", "time/score", "time/train") for _, v in run.series.get(key, []))
    return {
        "final loss": run.last(loss_key),
        "best loss": run.best(loss_key),
        "final perplexity": run.last("val/ppl"),
        "tokens seen": run.last("train/lengths"),
        "wall time (s)": wall,
    }


def plot(run: Run, stem: str, title: str, ylabel: str, keys: list[str], path: Path) -> bool:
    """Draw the logged `keys` of `run` against the step into `path`; False when the run logged none of them."""
    present = [k for k in keys if k in run.series]
    if not present or REQUIRES.get(stem, present[0]) not in run.series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in present:
        steps, values = zip(*run.series[key])
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
    if stem in ("perplexity", "learning_rate") and all(v > 0 for k in present for _, v in run.series[k]):
        ax.set_yscale("log")
    ax.set(title=f"{title} - {run.name}", xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def write_report(runs: list[str], output: str = "reports/training") -> Path:
    """Write `output`/report.md and report.html with one PNG per plot and run; returns the Markdown path.

    Args:
        runs: run folders (e.g. runs/pretrain/tiny), each holding the CSV logs of a training run.
        output: folder to write the report and its plots to.
    """
    if isinstance(runs, str):
        runs = [runs]
    if not runs:
        raise DataError("no run folders given")
    loaded = [read_run(folder) for folder in runs]
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(summary(loaded[0]))
    md = ["# Training report", "", "| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    page = ["<!doctype html><meta charset='utf-8'><title>Training report</title>", "<h1>Training report</h1>",
            "<table border=1 cellpadding=4><tr><th>run</th>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"]
    for run in loaded:
        cells = [_cell(v) for v in summary(run).values()]
        md.append(f"| {run.name} | " + " | ".join(cells) + " |")
        page.append(f"<tr><td>{html.escape(run.name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    page.append("</table>")
    for i, run in enumerate(loaded):
        md += ["", f"## {run.name}", "", f"Metrics: `{run.metrics_file}`", ""]
        page.append(f"<h2>{html.escape(run.name)}</h2>")
        for stem, title, ylabel, keys in PLOTS:
            name = f"{i:02d}_{Path(run.name).parent.name}_{Path(run.name).name}_{stem}.png".replace("/", "_")
            if plot(run, stem, title, ylabel, keys, out / name):
                md.append(f"![{title}]({name})")
                page.append(f"<img src='{name}' alt='{html.escape(title)}'>")
    (out / "report.md").write_text("\n".join(md) + "\n")
    (out / "report.html").write_text("\n".join(page) + "\n")
    return out / "report.md"
