"""Run a data config on a datatrove executor: five stages chained with `depends`, each a datatrove executor with
its logging_dir under output_dir/logs/<stage> (completion markers: a relaunch runs only unfinished tasks).

    process  (tasks)        read, clean, quality rules, dedup signatures        lit_llm.prepare.scale.process
    buckets  (dedup_tasks)  per hash column, the documents sharing a hash      lit_llm.prepare.scale.dedup
    plan     (1)            exact and near-duplicate clusters, val split, BPE  lit_llm.prepare.scale.dedup/output
    tokenize (tasks)        rejected documents, one token shard per task       lit_llm.prepare.scale.output
    finalize (1)            prepare_stats.json merged from every task           lit_llm.prepare.scale.finalize

Local and Ray runs block until the end and return the stats; a Slurm run submits the five array jobs (each
waiting on the one before through sbatch's afterok) and returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from lit_llm.atomic import FolderLock, OutputError
from lit_llm.errors import ConfigError, DataError
from lit_llm.prepare.scale.config import ExecutorConfig, require_packages
from lit_llm.prepare.scale.layout import STAGES, STATS_FILE, Layout, Piece, load_json, plan_pieces, save_json

log = logging.getLogger(__name__)


def executor_fingerprint(options_hash: str, executor: ExecutorConfig) -> str:
    """What a run's task files depend on besides the input files (which `_invalidate_changed_inputs` follows task
    by task): the options (`lit_llm.prepare.run.options_hash`) and how the work is split."""
    from lit_llm.prepare import steps

    return steps.fingerprint(options_hash, executor.tasks, executor.dedup_tasks)


def task_inputs(pieces: list[list[Piece]]) -> list[list]:
    """Per process task, what its input is: (path, size, mtime) of each file, the built-in range with a digest of
    the generator, an hf: source by name."""
    from lit_llm.prepare.corpus import generator_digest

    out = []
    for task in pieces:
        mine = []
        for piece in task:
            if piece.path is not None:
                st = Path(piece.path).stat()
                mine.append([piece.path, st.st_size, st.st_mtime_ns])
            elif piece.start is not None:
                mine.append([piece.source, piece.start, piece.stop, generator_digest()])
            else:
                mine.append([piece.source])
        out.append(mine)
    return out


def _dedup_tasks(executor: ExecutorConfig, n_columns: int) -> int:
    return max(1, min(executor.dedup_tasks or executor.tasks, n_columns))


def run_on_executor(config, config_hash: str, options_hash: str, force: bool = False) -> dict[str, Any]:
    """Prepare `config` (a PrepareConfig with an executor block) on its executor; returns the stats (for Slurm,
    what was submitted). `config_hash` and `options_hash` are `lit_llm.prepare.run`'s."""
    executor = config.executor
    require_packages(executor.type)
    layout = Layout(config.output_dir)
    layout.out.mkdir(parents=True, exist_ok=True)
    key = executor_fingerprint(options_hash, executor)
    pieces = plan_pieces(config.sources, executor.tasks)
    # A Slurm run only submits: its jobs run after this returns, so there is nothing to hold here.
    with FolderLock(layout.out, "lit-llm prepare") if executor.type != "slurm" else contextlib.nullcontext():
        if not force:
            done = _up_to_date(layout, config_hash, key)
            if done is not None:
                return done
        _claim(layout, key, force)
        _invalidate_changed_inputs(layout, task_inputs(pieces))
        stages = build_stages(config, pieces, layout, config_hash, key)
        if executor.type == "slurm":
            stages[-1].run()  # launches every stage through its depends chain
            return {"submitted": True, "executor": "slurm", "job_ids": {n: s.job_id for n, s in zip(STAGES, stages)},
                    "logging_dir": str(layout.out / "logs")}
        for name, stage in zip(STAGES, stages):
            _run_stage(name, stage, layout)
        return load_json(layout.out / STATS_FILE)


def _run_stage(name: str, stage, layout: Layout) -> None:
    from lit_llm.prepare.scale.executors import task_error
    from lit_llm.prepare.steps import forks_die_with_this_process

    shutil.rmtree(layout.logs(name) / "errors", ignore_errors=True)
    error = None
    try:
        # The local executor's forked workers (and its Manager) die with this process: a run killed by its PID
        # leaves none behind holding the output folder's lock.
        with forks_die_with_this_process():
            stage.run()
    except Exception as exc:  # Ray's executor, or a failure outside the tasks
        error = exc
    failed = stage.get_incomplete_ranks(skip_completed=True)
    if error is None and not failed:
        return
    cause = error if error is not None else next(filter(None, (task_error(layout.logs(name), r) for r in failed)),
                                                    "see the task logs")
    raise DataError(
        f"the {name} stage failed ({len(failed)} of {stage.world_size} task(s) unfinished: {failed[:8]}): {cause}; "
        f"finished tasks are kept ({layout.logs(name)}/completions, logs in {layout.logs(name)}/logs); fix the "
        "cause and rerun the same command: only unfinished tasks run"
    ) from error


def _up_to_date(layout: Layout, config_hash: str, key: str) -> dict[str, Any] | None:
    try:
        stats = load_json(layout.out / STATS_FILE)
    except (OSError, ValueError):
        return None
    if stats.get("config_hash") != config_hash or stats.get("executor_fingerprint") != key:
        return None
    for split, shards in stats.get("shards", {}).items():
        for shard in shards:
            if not (layout.out / shard["file"]).is_file():
                return None
    return {**stats, "up_to_date": True}


def _claim(layout: Layout, key: str, force: bool) -> None:
    """Refuse an output folder whose task files or token files come from another config (naming the file and both
    fingerprints), unless `force`, which clears them; then record this run's fingerprint."""
    theirs = None
    if layout.fingerprint.is_file():
        theirs = (layout.fingerprint, load_json(layout.fingerprint).get("fingerprint"))
    elif (layout.out / STATS_FILE).is_file() and _has_token_files(layout):
        stats = load_json(layout.out / STATS_FILE)
        theirs = (layout.out / STATS_FILE, stats.get("executor_fingerprint") or stats.get("config_hash"))
    elif _has_token_files(layout):
        theirs = (next(iter(_token_files(layout))), None)
    if theirs is not None and theirs[1] != key:
        if not force:
            what = f"fingerprint {theirs[1]}" if theirs[1] else "no fingerprint"
            raise OutputError(
                f"{layout.out} holds the outputs of another config: {theirs[0]} has {what}, this config's is {key}; "
                "choose another output_dir, or rerun with --force to replace them"
            )
        for folder in (layout.work, layout.out / "logs"):
            shutil.rmtree(folder, ignore_errors=True)
    elif force:
        shutil.rmtree(layout.out / "logs", ignore_errors=True)
        shutil.rmtree(layout.work, ignore_errors=True)
    save_json(layout.fingerprint, {"fingerprint": key})


def _token_files(layout: Layout):
    yield from (p for p in (layout.out / "train.bin", layout.out / "val.bin") if p.is_file())
    for split in ("train", "val"):
        yield from sorted((layout.out / split).glob("*.bin"))


def _has_token_files(layout: Layout) -> bool:
    return next(iter(_token_files(layout)), None) is not None


def _invalidate_changed_inputs(layout: Layout, inputs: list[list]) -> None:
    """A process task whose input files changed since its run runs again (its completion marker is removed), and
    then every later stage does too; unchanged finished tasks stay skipped."""
    path = layout.work / "inputs.json"
    before = load_json(path) if path.is_file() else None
    completions = layout.logs("process") / "completions"
    changed = [r for r in range(len(inputs)) if before is None or len(before) != len(inputs) or before[r] != inputs[r]]
    for r in changed:
        (completions / f"{r:05d}").unlink(missing_ok=True)
    if any(not (completions / f"{r:05d}").is_file() for r in range(len(inputs))):
        for stage in STAGES[1:]:
            shutil.rmtree(layout.logs(stage) / "completions", ignore_errors=True)
    if changed:
        log.info("input of %d process task(s) is new or changed: %s", len(changed), changed[:8])
    save_json(path, inputs)


def build_stages(config, pieces: list[list[Piece]], layout: Layout, config_hash: str, key: str) -> list:
    """The five executors, each depending on the one before."""
    from dataclasses import asdict

    from lit_llm.prepare import steps
    from lit_llm.prepare.scale import dedup, executors, finalize, output, process

    ex = config.executor
    tasks = ex.tasks
    n_columns = len(dedup.columns(config.dedup))
    if config.max_documents is not None:
        raise ConfigError("prepare config: max_documents caps one reader and has no meaning across an executor's "
                          "tasks; cap the sources themselves (builtin:N, fewer files) or drop the executor block")
    filter_rejects = process.rejected_writer(layout.filter_rejected, "filter") if config.write_rejected else None
    dedup_rejects = process.rejected_writer(layout.staged / "rejected", "dedup") if config.write_rejected else None
    extra = {"config_hash": config_hash, "executor_fingerprint": key, "pipeline_version": steps.PIPELINE_VERSION,
             "config": config.to_dict(), "rejected_file": "rejected/" if config.write_rejected else None,
             "executor": ex.to_dict()}
    pipelines = [
        [process.ReadPieces(pieces, layout, config.text_field, config.txt_mode, config.strict, config.streaming),
         process.CleanText(config.clean, config.filters),
         process.QualityFilter(config.filters, exclusion_writer=filter_rejects),
         process.WriteSignatures(config.dedup, layout)],
        [dedup.FindBuckets(config.dedup, layout, tasks)],
        [dedup.PlanDedup(config.dedup, layout, tasks, config.val_fraction),
         output.TrainTokenizer(layout, tasks, asdict(config.tokenizer))],
        [output.PlannedDocuments(layout, config.write_rejected),
         output.RemoveDuplicates(exclusion_writer=dedup_rejects),
         output.WriteTokenShards(layout)],
        [finalize.Finalize(layout, tasks, extra)],
    ]
    counts = [tasks, _dedup_tasks(ex, n_columns) if n_columns else 1, 1, tasks, 1]
    stages, previous = [], None
    for name, pipeline, n in zip(STAGES, pipelines, counts):
        previous = executors.build(ex, pipeline, n, str(layout.logs(name)), name, previous)
        stages.append(previous)
    return stages
