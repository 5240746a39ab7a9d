"""compare.png: exact match per task, grouped bars per checkpoint, with bootstrap intervals as error bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _labels(checkpoints: list[str]) -> list[str]:
    """Short legend names (a run folder's name, e.g. "sft" for runs/sft/tiny), or the paths where those collide."""
    short = [Path(c).parent.name or c for c in checkpoints]
    return short if len(set(short)) == len(short) else list(checkpoints)


def per_task_chart(per_task: dict[str, dict[str, dict[str, Any]]], path: Path, title: str) -> None:
    """Bars of each checkpoint's exact match per task and "all" (`per_task[checkpoint][group]` with "exact_match"
    and "exact_match_ci" = [low, high]); a group with nothing scored is an empty slot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checkpoints = list(per_task)
    groups = list(per_task[checkpoints[0]]) if checkpoints else []
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 3.6))
    width = 0.8 / max(len(checkpoints), 1)
    for i, (checkpoint, label) in enumerate(zip(checkpoints, _labels(checkpoints))):
        xs, heights, below, above = [], [], [], []
        for j, group in enumerate(groups):
            entry = per_task[checkpoint][group]
            if entry["exact_match"] is None:
                continue
            low, high = entry["exact_match_ci"]
            xs.append(j + i * width)
            heights.append(entry["exact_match"])
            below.append(entry["exact_match"] - low)
            above.append(high - entry["exact_match"])
        ax.bar(xs, heights, width, yerr=[below, above], capsize=2, label=label, error_kw={"elinewidth": 0.8})
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups, fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="exact match", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
