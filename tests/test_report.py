"""`lit-llm report`: every plot renders from a fixture metrics file, the summary is exact, bad folders fail clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lit_llm.cli.commands import main
from lit_llm.errors import DataError
from lit_llm.eval.report import PLOTS, read_run, summary, write_report


def write_metrics(folder: Path, rows: list[dict[str, float]]) -> Path:
    """A metrics.csv as Lightning's CSVLogger writes it: one column per key, empty where a row lacks it."""
    path = folder / "logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    keys = ["epoch", "step"] + sorted({k for row in rows for k in row} - {"epoch", "step"})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def full_run(tmp_path: Path) -> Path:
    """A run that logged every metric any plot draws, at steps 10, 20, 30; val/loss 3, 2, 2.5; val/ppl e^val/loss."""
    every = sorted({key for _, _, _, keys in PLOTS for key in keys})
    rows = []
    for i, step in enumerate((10, 20, 30)):
        row = {"epoch": 0, "step": step, **{key: 0.1 * (i + 1) for key in every}}
        row.update({"val/loss": (3.0, 2.0, 2.5)[i], "val/ppl": (20.1, 7.39, 12.2)[i], "train/lengths": 1000.0 * (i + 1),
                    "train/time": 1.5 * (i + 1)})  # fmt: skip
        rows.append(row)
    rows.append({"epoch": 0, "step": 30, "train/loss": float("nan")})  # skipped: not finite
    write_metrics(tmp_path / "run", rows)
    return tmp_path / "run"


def test_every_plot_renders_and_the_summary_is_exact(full_run: Path, tmp_path: Path) -> None:
    report = write_report([str(full_run)], output=str(tmp_path / "out"))
    text = report.read_text()
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert len(pngs) == len(PLOTS)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in pngs)
    assert all(f"]({p.name})" in text for p in pngs)
    html = (tmp_path / "out" / "report.html").read_text()
    assert all(f"src='{p.name}'" in html for p in pngs)
    assert f"| {full_run} | 2.5 | 2 | 12.2 | 3,000 | 4.5 |" in text
    run = read_run(full_run)
    assert run.series["train/loss"] == [(10.0, 0.1), (20.0, 0.2), (30.0, 0.30000000000000004)]


def test_runs_without_some_metrics_get_only_their_plots(tmp_path: Path) -> None:
    """A PPO run: only PPO plots (and the learning rate); the wall time is the sum of its phase timers."""
    rows = [{"epoch": 0, "step": s, "objective/scores": 0.2 + s / 100, "objective/kl": 1.0, "lr": 1e-4,
             "time/generate": 0.5, "time/score": 0.25, "time/train": 1.25} for s in range(3)]  # fmt: skip
    write_metrics(tmp_path / "ppo", rows)
    write_report([str(tmp_path / "ppo")], output=str(tmp_path / "out"))
    stems = sorted(p.stem.split("ppo_", 1)[1] for p in (tmp_path / "out").glob("*.png"))
    assert stems == ["learning_rate", "ppo_kl", "ppo_reward"]
    assert summary(read_run(tmp_path / "ppo"))["wall time (s)"] == 6.0


def test_folders_without_metrics_fail_with_one_message(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no metrics.csv"):
        read_run(tmp_path / "empty")
    with pytest.raises(DataError, match="run folder not found"):
        read_run(tmp_path / "missing")
    write_metrics(tmp_path / "blank", [])
    with pytest.raises(DataError, match="has no logged metrics"):
        read_run(tmp_path / "blank")
    with pytest.raises(SystemExit) as exc:
        main(["report", "--runs", f"[{tmp_path / 'empty'}]", "--output", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert f"lit-llm: error: {tmp_path / 'empty'} holds no metrics.csv" in capsys.readouterr().err


def test_report_command_writes_the_report(full_run: Path, tmp_path: Path, capsys) -> None:
    main(["report", "--runs", f"[{full_run}]", "--output", str(tmp_path / "cli")])
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'cli' / 'report.md'}"


def test_a_stages_own_plot_is_drawn_only_for_runs_of_that_stage(tmp_path):
    """PPO and GRPO both log val/score; the GRPO reward plot needs GRPO's frac_reward_zero_std, PPO's its scores."""
    from lit_llm.eval.report import Run, plot

    ppo = Run("ppo", tmp_path / "m.csv", {"objective/scores": [(0, 0.1), (1, 0.2)], "val/score": [(1, 0.3)]})
    grpo = Run("grpo", tmp_path / "m.csv", {"reward": [(0, 0.4)], "frac_reward_zero_std": [(0, 0.5)],
                                            "val/score": [(1, 0.6)]})  # fmt: skip
    keys = ["reward", "val/score", "val/reward"]
    assert not plot(ppo, "grpo_reward", "t", "y", keys, tmp_path / "a.png") and not (tmp_path / "a.png").exists()
    assert plot(grpo, "grpo_reward", "t", "y", keys, tmp_path / "b.png") and (tmp_path / "b.png").exists()
    assert not plot(grpo, "ppo_reward", "t", "y", ["objective/scores", "val/score"], tmp_path / "c.png")
    assert plot(ppo, "ppo_reward", "t", "y", ["objective/scores", "val/score"], tmp_path / "d.png")
