"""Ray for real on this machine, and the sbatch scripts a Slurm config submits (issue 20, item 6)."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("datatrove")

from lit_llm.prepare.run import prepare  # noqa: E402
from tests.prepare.scale.helpers import config, counts, rejected, tokens  # noqa: E402


def test_ray_gives_the_local_executors_result(tmp_path):
    ray = pytest.importorskip("ray")
    local = prepare(config(tmp_path / "local", executor={"type": "local", "tasks": 2, "workers": 2}), progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = prepare(config(tmp_path / "ray", executor={"type": "ray", "tasks": 2, "workers": 2,
                                                            "mem_per_cpu_gb": 1}), progress=False)
    finally:
        ray.shutdown()
    assert counts(on_ray) == counts(local)
    assert on_ray["executor"]["type"] == "ray"
    assert rejected(tmp_path / "ray") == rejected(tmp_path / "local")
    for split in ("train", "val"):
        assert np.array_equal(tokens(tmp_path / "ray", split), tokens(tmp_path / "local", split))


def test_a_slurm_config_submits_five_array_jobs_chained_by_afterok(tmp_path, monkeypatch):
    from datatrove.executor import slurm

    submitted = []

    def fake_sbatch(script, job_id_retriever, *args):
        submitted.append((script, args))
        return str(1000 + len(submitted))

    monkeypatch.setattr(slurm, "launch_slurm_job", fake_sbatch)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    executor = {"type": "slurm", "tasks": 8, "partition": "cpu", "time": "02:00:00", "cpus_per_task": 2,
                "mem_per_cpu_gb": 4, "venv_path": "/opt/lit/.venv/bin/activate", "job_name": "corpus"}
    result = prepare(config(tmp_path / "out", executor=executor), progress=False)
    assert result["submitted"] is True
    jobs = [(script, args) for script, args in submitted if "merge_stats" not in script]
    names = [re.search(r"#SBATCH --job-name=(\S+)", s).group(1) for s, _ in jobs]
    assert names == ["corpus-process", "corpus-buckets", "corpus-plan", "corpus-tokenize", "corpus-finalize"]
    process = jobs[0][0]
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=02:00:00", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem-per-cpu=4G", "#SBATCH --array=0-7", "source /opt/lit/.venv/bin/activate"):
        assert line in process
    assert f"launch_pickled_pipeline {tmp_path / 'out' / 'logs' / 'process' / 'executor.pik'}" in process
    assert "#SBATCH --array=0-0" in jobs[2][0] and "#SBATCH --array=0-7" in jobs[3][0]
    # Each stage waits for the one before it to succeed; the first waits for nothing.
    ids = {name: result["job_ids"][name.split("-")[1]] for name in names}
    assert not any(a.startswith("--dependency") for a in jobs[0][1])
    stage_ids = list(ids.values())
    for (_, args), before in zip(jobs[1:], stage_ids):
        assert f"--dependency=afterok:{before}" in args
    assert not (tmp_path / "out" / "prepare_stats.json").exists()  # nothing ran here
