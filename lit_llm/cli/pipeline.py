"""`lit-llm pipeline`: run a chain of lit-llm commands from one YAML file, skipping the steps that are done.

A pipeline file lists steps; each names a lit-llm command (prepare, fit, pairs, compare, report, ...), an
optional config file, options (`args`, dotted keys such as `trainer.max_steps`), the steps it `needs` (default:
the one before) and the `outputs` it writes. A step is skipped when its outputs exist and its fingerprint
matches the one recorded when it last finished. The fingerprint hashes the command, the config file's text, the
options, the contents of any declared `inputs`, and the completion tokens of the steps it needs, so a step that
reruns makes every step downstream of it rerun too. A step is recorded as done only after it succeeds (a fit
stopped by SIGTERM or Ctrl-C exits non-zero), so an interrupted pipeline resumes at the step that did not finish:
a fit step interrupted after a checkpoint save resumes from that checkpoint (`--ckpt_path`), and any other rerun
replaces the earlier run's output (`--restart true` for fit, `--overwrite true` for pairs, import and export), so
no step downstream ever reads an older upstream model.

Steps run in this process through the runner the CLI hands in (`lit_llm.cli.commands.main`), exactly as the
printed command line would.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

from lit_llm.atomic import LOCK_FILE, TEMP_PREFIX
from lit_llm.prepare.shards import file_digest
from lit_llm.prepare.steps import fingerprint
from lit_llm.errors import ConfigError, LitLLMError

STEP_KEYS = {"name", "command", "config", "args", "needs", "outputs", "inputs"}


@dataclass
class Step:
    name: str
    command: str
    config: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        argv = [self.command] + (["--config", self.config] if self.config else [])
        for key, value in self.args.items():
            argv.append(f"--{key}={value if isinstance(value, str) else json.dumps(value)}")
        return argv

    def command_line(self) -> str:
        return "lit-llm " + " ".join(shlex.quote(part) for part in self.argv())


@dataclass
class Pipeline:
    path: Path
    steps: list[Step]
    state: Path

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise ConfigError(f"{self.path}: no step named {name!r} (steps: {', '.join(s.name for s in self.steps)})")


# Runs one command line (a step's argv), as `lit_llm.cli.commands.main` does; handed in by the CLI, so this module
# knows nothing of the commands it chains.
Runner = Callable[[list[str]], Any]


def load_pipeline(
    path: str | Path, overrides: dict[str, dict[str, Any]] | None = None, commands: Iterable[str] | None = None
) -> Pipeline:
    """Read and check a pipeline file; `overrides` maps a step name to keys that replace its `config` or set
    options in its `args` (what `--STEP.KEY VALUE` does on the command line); `commands` are the commands a step
    may name (None: any)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty `steps` list")
    unknown = set(data) - {"steps", "state"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; a pipeline file has `steps` and `state`")
    commands, steps = (set(commands) - {"pipeline"} if commands is not None else None), []
    for i, raw in enumerate(data["steps"]):
        where = f"{path}: steps[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw.get("command"):
            raise ConfigError(f"{where}: every step needs a `name` and a `command`")
        where = f"{path}: step {raw['name']!r}"
        if set(raw) - STEP_KEYS:
            raise ConfigError(f"{where}: unknown key(s) {sorted(set(raw) - STEP_KEYS)}; a step has {sorted(STEP_KEYS)}")
        if commands is not None and raw["command"] not in commands:
            raise ConfigError(f"{where}: unknown command {raw['command']!r} (one of {', '.join(sorted(commands))})")
        if any(s.name == raw["name"] for s in steps):
            raise ConfigError(f"{where}: the name is used twice")
        for key in ("needs", "outputs", "inputs"):
            if not isinstance(raw.get(key, []), list):
                raise ConfigError(f"{where}: `{key}` must be a list")
        if not isinstance(raw.get("args", {}), dict):
            raise ConfigError(f"{where}: `args` must be a mapping of option to value")
        needs = raw.get("needs", [steps[-1].name] if steps else [])
        for need in needs:
            if not any(s.name == need for s in steps):
                raise ConfigError(f"{where}: needs {need!r}, which is not an earlier step")
        steps.append(Step(raw["name"], raw["command"], raw.get("config"), dict(raw.get("args") or {}), list(needs),
                          list(raw.get("outputs", [])), list(raw.get("inputs", []))))
    pipeline = Pipeline(path, steps, Path(data.get("state") or f"runs/pipeline/{path.stem}.json"))
    for name, keys in (overrides or {}).items():
        step = pipeline.step(name)
        for key, value in keys.items():
            if key == "config":
                step.config = value
            else:
                step.args[key] = value
    for step in pipeline.steps:
        if step.config and not Path(step.config).is_file():
            raise ConfigError(f"{path}: step {step.name!r}: config file {step.config} does not exist")
    return pipeline


def step_fingerprint(step: Step, tokens: dict[str, str | None]) -> str | None:
    """None while a needed step has no completion token yet (it has not run or will rerun)."""
    if any(tokens.get(need) is None for need in step.needs):
        return None
    config = Path(step.config).read_text() if step.config else None
    inputs = {name: _file_digest(Path(name)) for name in step.inputs}
    return fingerprint(step.command, config, step.args, inputs, [tokens[need] for need in step.needs])


def _file_digest(path: Path) -> str | None:
    if path.is_dir():
        # A run's lock file and the temporary files of a write in progress are not content.
        files = [p for p in path.rglob("*") if p.is_file() and p.name != LOCK_FILE and not p.name.startswith(TEMP_PREFIX)]
        return fingerprint(sorted((str(p.relative_to(path)), file_digest(p)) for p in files))
    return file_digest(path)


# Options a rerun passes so that a command replaces what an earlier run of the step wrote, instead of refusing.
REPLACE_OPTIONS = {"fit": {"restart": True}, "pairs": {"overwrite": True}, "import": {"overwrite": True},
                   "export": {"overwrite": True}}


def _resume_checkpoint(step: Step, record: dict | None, current: str | None) -> str | None:
    """The checkpoint to resume a fit step from: the step was started with the same fingerprint and did not finish
    (interrupted, preempted, failed), and its declared checkpoint output exists."""
    if step.command != "fit" or not record or "running" not in record or record["running"] != current:
        return None
    # Only a checkpoint this attempt wrote: one older than its start belongs to an earlier run of the step.
    started = record.get("started_at", float("inf"))
    checkpoints = [out for out in step.outputs
                   if out.endswith(".ckpt") and Path(out).is_file() and Path(out).stat().st_mtime >= started]
    return checkpoints[0] if checkpoints else None


def run_options(step: Step, record: dict | None, current: str | None) -> dict[str, Any]:
    """The options the runner adds to a step's own: resume an interrupted fit, or replace an earlier run's output."""
    if any(key in step.args for key in ("ckpt_path", "restart", "overwrite")):
        return {}
    resume = _resume_checkpoint(step, record, current)
    if resume is not None:
        return {"ckpt_path": resume}
    return dict(REPLACE_OPTIONS.get(step.command, {}))


def _why_run(step: Step, record: dict | None, current: str | None, force: bool) -> str | None:
    if force:
        return "forced"
    if record is None:
        return "never finished"
    if "token" not in record:
        resume = _resume_checkpoint(step, record, current)
        return f"interrupted; resumes from {resume}" if resume else "did not finish"
    if current is None:
        return "a step it needs reruns"
    if record["fingerprint"] != current:
        return "its config, options or inputs changed"
    missing = [out for out in step.outputs if not Path(out).exists()]
    if missing:
        return f"output {missing[0]} is missing"
    if not step.outputs:
        return "it declares no outputs"
    return None


def run_pipeline(pipeline: Pipeline, runner: Runner, force: bool = False, dry_run: bool = False) -> list[dict]:
    """Run the steps that are not up to date, in order, each through `runner(argv)`; returns one row per step
    (name, status, seconds)."""
    state = _read_state(pipeline.state)
    tokens = {name: record.get("token") for name, record in state.items()}
    rows, total = [], len(pipeline.steps)
    for i, step in enumerate(pipeline.steps, 1):
        current = step_fingerprint(step, tokens)
        reason = _why_run(step, state.get(step.name), current, force)
        if reason is None:
            print(f"[{i}/{total}] {step.name}: up to date, skipped ({step.command_line()})", flush=True)
            rows.append({"step": step.name, "status": "skipped", "seconds": 0.0})
            continue
        run = replace(step, args={**step.args, **run_options(step, state.get(step.name), current)})
        print(f"\n[{i}/{total}] {step.name} ({reason}): {run.command_line()}", flush=True)
        if dry_run:
            tokens[step.name] = None
            rows.append({"step": step.name, "status": "would run", "seconds": 0.0})
            continue
        # Until it finishes, the step counts as not done: its earlier record goes now, so outputs that an
        # interrupted run leaves half-replaced are never taken as up to date.
        state[step.name] = {"running": current, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "started_at": time.time()}
        _write_state(pipeline.state, state)
        tokens[step.name] = None
        start = time.perf_counter()
        try:
            runner(run.argv())
        except SystemExit as exc:
            if exc.code not in (0, None):
                interrupted = isinstance(exc.code, int) and exc.code > 128
                raise StepFailed(step.name, run.command_line(), pipeline.state, exc.code if interrupted else 2,
                                 interrupted) from None
        finally:
            _finish_wandb_run()
        seconds = time.perf_counter() - start
        missing = [out for out in step.outputs if not Path(out).exists()]
        if missing:
            raise LitLLMError(f"pipeline step {step.name!r} finished without writing {missing[0]} "
                              f"(declared in `outputs` of {pipeline.path})")
        tokens[step.name] = fingerprint(current, time.time())
        state[step.name] = {"fingerprint": current, "token": tokens[step.name], "seconds": round(seconds, 1)}
        _write_state(pipeline.state, state)
        rows.append({"step": step.name, "status": "ran", "seconds": seconds})
    return rows


class StepFailed(LitLLMError):
    """A step that ended without finishing; `code` is the exit code the pipeline ends with (128 + a signal)."""

    def __init__(self, name: str, command: str, state: Path, code: int, interrupted: bool) -> None:
        self.code = code
        if interrupted:
            message = (f"pipeline step {name!r} was interrupted ({command}); it is not recorded as done. Run the "
                       f"pipeline again to resume it from its last checkpoint (state: {state})")
        else:
            message = f"pipeline step {name!r} failed ({command}); the steps before it are recorded in {state}"
        super().__init__(message)


def _finish_wandb_run() -> None:
    """Lightning's WandbLogger reuses a W&B run that is still open in the process; each step is its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _read_state(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("steps", {})
    except (json.JSONDecodeError, AttributeError):
        print(f"warning: {path} is not a pipeline state file; every step will run")
        return {}


def _write_state(path: Path, steps: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"steps": steps}, indent=2))
    tmp.replace(path)


def summary(pipeline: Pipeline, rows: list[dict]) -> str:
    """The steps with their status and time, then the comparison table and the report path, if the pipeline
    has compare and report steps."""
    lines = ["", "pipeline summary:", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']:.0f} |" for r in rows]
    lines.append(f"total: {sum(r['seconds'] for r in rows) / 60:.1f} min (state: {pipeline.state})")
    for step in pipeline.steps:
        if step.command == "compare":
            table = Path(step.args.get("output", "reports/compare")) / "compare.md"
            if table.is_file():
                lines += ["", table.read_text().split("## Example answers")[0].strip()]
        if step.command == "report":
            report = Path(step.args.get("output", "reports/training")) / "report.md"
            if report.is_file():
                lines += ["", f"training report: {report} ({report.with_suffix('.html')})"]
    return "\n".join(lines)


def pipeline_command(argv: list[str], runner: Runner, commands: Iterable[str] | None = None) -> None:
    """`lit-llm pipeline --config FILE [--force] [--dry_run] [--STEP.KEY VALUE ...]`; steps run through `runner`."""
    import yaml

    usage = ("usage: lit-llm pipeline --config FILE [--force] [--dry_run] [--STEP.KEY VALUE ...]\n"
             "  --config FILE        a pipeline file, e.g. configs/pipeline/demo.yaml\n"
             "  --STEP.config FILE   use another config file for a step\n"
             "  --STEP.KEY VALUE     set an option of a step (e.g. --pretrain.trainer.max_steps 100)\n"
             "  --force              rerun every step; --dry_run prints what would run")
    config, force, dry_run, overrides = None, False, False, {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(usage)
            return
        key, _, value = arg.partition("=")
        if key in ("--force", "--dry_run"):
            flag = yaml.safe_load(value) if value else True
            force, dry_run = (flag, dry_run) if key == "--force" else (force, flag)
            continue
        if not key.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}\n{usage}")
        if not value:
            if not args:
                raise ConfigError(f"{key} needs a value\n{usage}")
            value = args.pop(0)
        if key == "--config":
            config = value
        elif "." in key:
            name, _, option = key[2:].partition(".")
            overrides.setdefault(name, {})[option] = value if option == "config" else yaml.safe_load(value)
        else:
            raise ConfigError(f"unknown option {key}: step options are written --STEP.KEY\n{usage}")
    if config is None:
        raise ConfigError(f"--config is required\n{usage}")
    pipeline = load_pipeline(config, overrides, commands)
    try:
        rows = run_pipeline(pipeline, runner, force=force, dry_run=dry_run)
    except StepFailed as exc:
        print(f"lit-llm: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.code) from None
    print(summary(pipeline, rows))
