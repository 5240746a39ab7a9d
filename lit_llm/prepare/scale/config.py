"""The `executor:` block of a data config: which datatrove executor runs the pipeline, with how many tasks."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from lit_llm.errors import ConfigError

EXECUTOR_TYPES = ("local", "slurm", "ray")
# Keys that only one kind of executor reads; giving them to another is a mistake worth a message.
_ONLY_FOR = {
    "partition": ("slurm",), "time": ("slurm",), "qos": ("slurm",), "venv_path": ("slurm",),
    "env_command": ("slurm",), "sbatch_args": ("slurm",), "job_name": ("slurm",),
    "mem_per_cpu_gb": ("slurm", "ray"), "cpus_per_task": ("slurm", "ray"),
}
_PACKAGES = {"local": ("datatrove",), "slurm": ("datatrove",), "ray": ("datatrove", "ray")}


@dataclass
class ExecutorConfig:
    """Where the pipeline's tasks run. `tasks` splits the input (by file; the built-in corpus by document range;
    an hf: data set is read by one task); `workers` caps how many run at once (-1: all)."""

    type: str = "local"  # local | slurm | ray
    tasks: int = 4
    workers: int = -1
    dedup_tasks: int | None = None  # tasks of the buckets stage (one LSH band each at most); None: min(tasks, bands)
    # Slurm and Ray
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    # Slurm only
    partition: str | None = None
    time: str = "04:00:00"
    qos: str | None = None
    job_name: str = "lit-llm-prepare"
    venv_path: str | None = None  # `source`d in the sbatch script; env_command instead for anything else
    env_command: str | None = None
    sbatch_args: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in EXECUTOR_TYPES:
            raise ConfigError(f"executor.type must be one of {', '.join(EXECUTOR_TYPES)}, got {self.type!r}")
        for name in ("tasks", "workers", "dedup_tasks", "cpus_per_task"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"executor.{name} must be an integer, got {value!r}")
            low = -1 if name == "workers" else 1
            if value < low or (name == "workers" and value == 0):
                raise ConfigError(f"executor.{name} must be {'-1 or ' if low < 0 else ''}>= 1, got {value}")
        if self.mem_per_cpu_gb <= 0:
            raise ConfigError(f"executor.mem_per_cpu_gb must be positive, got {self.mem_per_cpu_gb}")
        if self.type == "slurm" and not self.partition:
            raise ConfigError("executor.partition is required for type slurm (the partition sbatch submits to)")
        # Not an error: `--executor.type local` on a Slurm config keeps the config's partition.
        ignored = [f.name for f in fields(self)
                   if f.name in _ONLY_FOR and self.type not in _ONLY_FOR[f.name] and getattr(self, f.name) != f.default]
        if ignored:
            warnings.warn(f"executor.{', executor.'.join(ignored)} ignored: not read by a {self.type} executor",
                          stacklevel=2)

    @classmethod
    def from_dict(cls, data: Any, where: str = "prepare config") -> ExecutorConfig:
        if isinstance(data, ExecutorConfig):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: executor must be a mapping such as {{type: local, tasks: 4}}, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown executor key(s) {', '.join(unknown)}; valid keys: "
                              f"{', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_packages(executor_type: str) -> None:
    """ConfigError naming the extra to install when a package the executor needs is missing."""
    missing = [p for p in _PACKAGES[executor_type] if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(
            f"executor type {executor_type} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed: pip install 'lit_llm[scale]' (the in-process path, without an executor block, needs neither)"
        )
