"""`lit-llm pipeline`: step order, skipping what is up to date, reruns downstream of a change, overrides, failures,
bad pipeline files; and the demo pipeline end to end at miniature sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lit_llm.cli import pipeline as pl
from lit_llm.cli.commands import COMMANDS, TRAINER_COMMANDS, main
from lit_llm.errors import ConfigError, LitLLMError
from lit_llm.loggers import offline_history

REPO = Path(__file__).resolve().parents[2]
KNOWN = set(COMMANDS) | set(TRAINER_COMMANDS)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A four-step pipeline (b and c need a, d needs c) whose commands are recorded instead of run: the fake
    command writes the file named by its --output option unless told to fail or to write nothing."""
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text("x: 1\n")
    steps = [
        {"name": "a", "command": "prepare", "config": "a.yaml", "args": {"output": "out/a"}, "outputs": ["out/a"]},
        {"name": "b", "command": "pairs", "args": {"output": "out/b", "per_task": 3}, "needs": ["a"],
         "outputs": ["out/b"]},
        {"name": "c", "command": "fit", "args": {"output": "out/c", "trainer.max_steps": 5}, "needs": ["a"],
         "outputs": ["out/c"]},
        {"name": "d", "command": "report", "args": {"output": "out/d", "runs": ["out/c"]}, "outputs": ["out/d"]},
    ]
    Path("p.yaml").write_text(yaml.safe_dump({"state": "state.json", "steps": steps}, sort_keys=False))
    calls, behaviour = [], {}

    def fake_main(argv):
        calls.append(argv)
        output = next(a.split("=", 1)[1] for a in argv if a.startswith("--output="))
        if behaviour.get(output) == "fail":
            raise SystemExit(2)
        if behaviour.get(output) != "nothing":
            Path(output).parent.mkdir(exist_ok=True)
            Path(output).write_text(" ".join(argv))

    monkeypatch.setattr("lit_llm.cli.commands.main", fake_main)

    def run(overrides=None, **kwargs):
        calls.clear()
        rows = pl.run_pipeline(pl.load_pipeline("p.yaml", overrides, KNOWN), fake_main, **kwargs)
        return [c[0] for c in calls], {r["step"]: r["status"] for r in rows}

    run.behaviour = behaviour
    run.calls = calls
    return run


def _ran(commands_statuses):
    return [name for name, status in commands_statuses[1].items() if status == "ran"]


def test_steps_run_in_order_with_their_command_lines(toy):
    commands, statuses = toy()
    assert commands == ["prepare", "pairs", "fit", "report"]
    assert list(statuses.values()) == ["ran"] * 4
    assert _ran(toy(force=True)) == ["a", "b", "c", "d"]
    assert toy.calls[0] == ["prepare", "--config", "a.yaml", "--output=out/a"]
    # A rerun replaces what an earlier run of the step wrote: fit starts over, pairs overwrites.
    assert toy.calls[1] == ["pairs", "--output=out/b", "--per_task=3", "--overwrite=true"]
    assert toy.calls[2] == ["fit", "--output=out/c", "--trainer.max_steps=5", "--restart=true"]
    assert toy.calls[3] == ["report", "--output=out/d", '--runs=["out/c"]']
    state = json.loads(Path("state.json").read_text())["steps"]
    assert set(state) == {"a", "b", "c", "d"} and all(len(r["token"]) == 16 for r in state.values())


def test_rerun_skips_everything_that_is_up_to_date(toy):
    toy()
    commands, statuses = toy()
    assert commands == [] and set(statuses.values()) == {"skipped"}


def test_changed_option_reruns_the_step_and_only_what_needs_it(toy):
    toy()
    # b's option changed: b reruns; c and d do not need b.
    assert _ran(toy({"b": {"per_task": 4}})) == ["b"]
    # c's option changed: c and d (which needs c) rerun.
    assert _ran(toy({"b": {"per_task": 4}, "c": {"trainer.max_steps": 6}})) == ["c", "d"]
    # Back to b's original option: b reruns again, nothing else.
    assert _ran(toy({"c": {"trainer.max_steps": 6}})) == ["b"]


def test_edited_config_file_reruns_everything_downstream(toy):
    toy()
    Path("a.yaml").write_text("x: 2\n")
    assert _ran(toy()) == ["a", "b", "c", "d"]
    assert _ran(toy()) == []


def test_missing_output_reruns_the_step_and_its_dependents(toy):
    toy()
    Path("out/c").unlink()
    assert _ran(toy()) == ["c", "d"]


def test_swapping_a_config_file_by_override(toy):
    toy()
    Path("a2.yaml").write_text("x: 1\n")  # same text, other file: the fingerprint is the content
    assert _ran(toy({"a": {"config": "a2.yaml"}})) == []
    Path("a2.yaml").write_text("x: 3\n")
    commands, _ = toy({"a": {"config": "a2.yaml"}})
    assert commands == ["prepare", "pairs", "fit", "report"]


def test_failed_step_stops_the_pipeline_and_is_not_recorded(toy):
    toy.behaviour["out/c"] = "fail"
    with pytest.raises(LitLLMError, match="pipeline step 'c' failed .*lit-llm fit --output=out/c"):
        toy()
    steps = json.loads(Path("state.json").read_text())["steps"]
    assert {name for name, record in steps.items() if "token" in record} == {"a", "b"}
    assert "running" in steps["c"]  # started, not done
    toy.behaviour.clear()
    assert _ran(toy()) == ["c", "d"]


def test_step_that_does_not_write_its_output_is_an_error(toy):
    toy.behaviour["out/b"] = "nothing"
    with pytest.raises(LitLLMError, match="'b' finished without writing out/b"):
        toy()


def test_dry_run_runs_nothing_and_records_nothing(toy):
    commands, statuses = toy(dry_run=True)
    assert commands == [] and set(statuses.values()) == {"would run"}
    assert not Path("state.json").exists()
    toy()
    Path("out/a").unlink()
    commands, statuses = toy(dry_run=True)
    assert commands == [] and list(statuses.values()) == ["would run"] * 4


def test_command_line_overrides_and_summary(toy, capsys):
    main(["pipeline", "--config", "p.yaml"])
    main(["pipeline", "--config=p.yaml", "--b.per_task", "9", "--c.config", "a.yaml"])
    out = capsys.readouterr().out
    assert "[2/4] b (its config, options or inputs changed): lit-llm pairs --output=out/b --per_task=9" in out
    assert "[3/4] c (its config, options or inputs changed): lit-llm fit --config a.yaml" in out
    assert "| a | skipped | 0 |" in out and "state: state.json" in out


def test_declared_inputs_are_part_of_the_fingerprint(toy, tmp_path):
    data = yaml.safe_load(Path("p.yaml").read_text())
    data["steps"][0]["inputs"] = ["raw"]
    Path("p.yaml").write_text(yaml.safe_dump(data))
    Path("raw").mkdir()
    Path("raw/one.txt").write_text("hello")
    toy()
    assert _ran(toy()) == []
    Path("raw/one.txt").write_text("hello again")
    assert _ran(toy())[0] == "a"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["steps"][1].update(command="train"), "step 'b': unknown command 'train'"),
        (lambda d: d["steps"][1].update(needs=["d"]), "step 'b': needs 'd', which is not an earlier step"),
        (lambda d: d["steps"][2].update(name="a"), "step 'a': the name is used twice"),
        (lambda d: d["steps"][0].update(config="missing.yaml"), "step 'a': config file missing.yaml does not exist"),
        (lambda d: d["steps"][0].update(output="x"), r"step 'a': unknown key\(s\) \['output'\]"),
        (lambda d: d["steps"][0].update(outputs="x"), "step 'a': `outputs` must be a list"),
        (lambda d: d["steps"][0].pop("command"), r"steps\[0\]: every step needs a `name` and a `command`"),
        (lambda d: d.update(stages=[]), r"unknown key\(s\) \['stages'\]"),
        (lambda d: d.update(steps=[]), "expected a mapping with a non-empty `steps` list"),
    ],
)
def test_bad_pipeline_files_are_named(toy, edit, message, capsys):
    data = yaml.safe_load(Path("p.yaml").read_text())
    edit(data)
    Path("p.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "--config", "p.yaml"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "p.yaml" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match=message):
        pl.load_pipeline("p.yaml", commands=KNOWN)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "nope.yaml"], "pipeline file nope.yaml does not exist"),
        (["--config", "p.yaml", "--zz.per_task", "1"], "no step named 'zz'"),
        (["--config", "p.yaml", "--per_task", "1"], "unknown option --per_task"),
        (["--config", "p.yaml", "--b.per_task"], "--b.per_task needs a value"),
        (["--dry_run"], "--config is required"),
    ],
)
def test_bad_command_lines_are_named(toy, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_state_file_reruns_everything_with_a_warning(toy, capsys):
    toy()
    Path("state.json").write_text("{not json")
    assert _ran(toy()) == ["a", "b", "c", "d"]
    assert "state.json is not a pipeline state file" in capsys.readouterr().out


def test_demo_pipeline_parses_and_chains_every_stage(monkeypatch):
    monkeypatch.chdir(REPO)
    demo = pl.load_pipeline("configs/pipeline/demo.yaml", commands=KNOWN)
    assert [s.name for s in demo.steps] == [
        "prepare", "pretrain", "sft", "pairs_train", "pairs_val", "reward", "dpo", "orpo", "ppo", "grpo", "compare",
        "report",
    ]
    fits = [s for s in demo.steps if s.command == "fit"]
    for step in fits:  # each fit step declares the checkpoint its config writes
        root = yaml.safe_load(Path(step.config).read_text())["trainer"]["default_root_dir"]
        assert step.outputs == [f"{root}/checkpoints/last.ckpt"]
    assert demo.step("report").needs == [s.name for s in fits]


# The demo pipeline at miniature sizes: each override goes through the same path as --STEP.KEY VALUE.
_FIT = {"trainer.max_steps": 4, "trainer.val_check_interval": 2, "trainer.limit_val_batches": 1,
        "trainer.enable_progress_bar": False}
MINIATURE = {
    "prepare": {"sources": ["builtin:400"], "tokenizer.vocab_size": 384, "progress": False},
    "pretrain": {**_FIT, "data.batch_size": 4},
    "sft": {**_FIT, "data.examples_per_task": 20, "data.val_examples_per_task": 2, "model.eval_generations": 2},
    "pairs_train": {"per_task": 4, "pairs_per_prompt": 1},
    "pairs_val": {"per_task": 2},
    "reward": {**_FIT},
    "dpo": {**_FIT, "model.eval_generations": 2},
    "orpo": {**_FIT, "model.eval_generations": 2},
    "ppo": {**_FIT, "data.examples_per_task": 8, "data.val_examples_per_task": 1},
    "grpo": {**_FIT, "data.batch_size": 2, "model.num_generations": 2, "data.examples_per_task": 8,
             "data.val_examples_per_task": 1, "model.eval_generations": 2},
    "compare": {"per_task": 2, "examples": 1},
}


def test_miniature_demo_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    argv = ["pipeline", "--config", "configs/pipeline/demo.yaml"]
    for step, keys in MINIATURE.items():
        argv += [arg for key, value in keys.items() for arg in (f"--{step}.{key}", json.dumps(value))]
    main(argv)
    out = capsys.readouterr().out
    state = json.loads(Path("runs/pipeline/demo.json").read_text())["steps"]
    assert len(state) == 12
    compare = json.loads(Path("reports/compare/compare.json").read_text())
    rows = {row["checkpoint"]: row for row in compare["table"]}
    assert list(rows) == ["runs/sft/tiny", "runs/dpo/tiny", "runs/orpo/tiny", "runs/ppo/tiny", "runs/grpo/tiny"]
    assert rows["runs/sft/tiny"]["win_rate_verifier"] == 0.5 and rows["runs/sft/tiny"]["kl_to_baseline"] == 0
    assert "| runs/ppo/tiny | ppo |" in out.split("pipeline summary:")[1]
    assert "| runs/grpo/tiny | grpo |" in out.split("pipeline summary:")[1]
    assert "training report: reports/demo/report.md" in out
    # Steps run in one process, yet each stage is its own W&B run with its own name and stage metadata.
    stages = {"pretrain": "causal_lm", "sft": "sft", "reward": "reward", "dpo": "dpo", "orpo": "orpo", "ppo": "ppo",
              "grpo": "grpo"}
    for run, stage in stages.items():
        (run_dir,) = Path(f"runs/{run}/tiny/wandb").glob("offline-run-*")
        record = offline_history(run_dir)
        assert record["run"]["name"] == f"{run}-tiny" and record["summary"]["checkpoint/stage"] == stage
    # A rerun with the same overrides skips all 12 steps; a changed compare option reruns compare only.
    main(argv)
    assert capsys.readouterr().out.count("up to date, skipped") == 12
    main([*argv, "--compare.examples", "2"])
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == 11 and "[11/12] compare (its config" in out
