"""datatrove's executors for one stage, built from the `executor:` block. A failing local task is recorded
(logs/<stage>/errors/<rank>.txt) and the other tasks run on, so one malformed record does not throw away their
work; its completion marker is missing, so a relaunch runs it again."""

from __future__ import annotations

from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.stats import PipelineStats

from lit_llm.prepare.scale.config import ExecutorConfig


class KeepGoingLocalExecutor(LocalPipelineExecutor):
    def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
        try:
            return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)
        except Exception as exc:
            with self.logging_dir.open(f"errors/{rank:05d}.txt", "w") as f:
                f.write(str(exc))
            return PipelineStats()


def task_error(logging_dir: Path, rank: int) -> str | None:
    path = logging_dir / "errors" / f"{rank:05d}.txt"
    return path.read_text() if path.is_file() else None


def build(ex: ExecutorConfig, pipeline: list, tasks: int, logging_dir: str, name: str, depends):
    workers = min(ex.workers if ex.workers != -1 else tasks, tasks)
    if ex.type == "local":
        return KeepGoingLocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir,
                                      depends=depends, start_method="fork")
    if ex.type == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, depends=depends,
                                   cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb)
    from datatrove.executor.slurm import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline, tasks=tasks, workers=ex.workers, logging_dir=logging_dir, depends=depends,
        time=ex.time, partition=ex.partition, cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=int(ex.mem_per_cpu_gb),
        job_name=f"{ex.job_name}-{name}", qos=ex.qos or "normal", venv_path=ex.venv_path, env_command=ex.env_command,
        sbatch_args=ex.sbatch_args, slurm_logs_folder=str(Path(logging_dir).parent / "slurm" / name),
    )
