"""Bad executor blocks, crashing tasks, foreign outputs and a killed run (issue 20, items 5, 7 and Bad input)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("datatrove")

from lit_llm.atomic import FolderLock, OutputError  # noqa: E402
from lit_llm.errors import ConfigError, DataError  # noqa: E402
from lit_llm.prepare.run import PrepareConfig, prepare  # noqa: E402
from lit_llm.prepare.scale import config as scale_config  # noqa: E402
from tests.prepare.scale.helpers import config, counts, rejected, tokens  # noqa: E402

LOCAL = {"type": "local", "tasks": 3, "workers": 1}


@pytest.mark.parametrize("block, message", [
    ({"type": "kubernetes"}, "executor.type must be one of local, slurm, ray, got 'kubernetes'"),
    ({"type": "local", "nodes": 4}, "unknown executor key(s) nodes; valid keys:"),
    ({"type": "local", "tasks": 0}, "executor.tasks must be >= 1, got 0"),
    ({"type": "ray", "workers": 0}, "executor.workers must be -1 or >= 1, got 0"),
    ({"type": "slurm", "tasks": 8}, "executor.partition is required for type slurm"),
    ("local", "executor must be a mapping such as {type: local, tasks: 4}"),
])
def test_a_bad_executor_block_is_refused_naming_the_key(tmp_path, block, message):
    path = tmp_path / "data.yaml"
    path.write_text(json.dumps({"sources": ["builtin:10"], "executor": block}))
    with pytest.raises(ConfigError) as info:
        PrepareConfig.from_yaml(path)
    assert message in str(info.value)


def test_keys_of_another_executor_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="executor.mem_per_cpu_gb, executor.partition ignored: not read by a local"):
        block = scale_config.ExecutorConfig(type="local", partition="cpu", mem_per_cpu_gb=4)
    assert block.type == "local"


def test_a_missing_package_names_the_extra(tmp_path, monkeypatch):
    real = scale_config.importlib.util.find_spec
    monkeypatch.setattr(scale_config.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    with pytest.raises(ConfigError, match=r"executor type ray needs ray, which is not installed: pip install "
                                          r"'lit_llm\[scale\]'"):
        prepare(config(tmp_path / "out", executor={"type": "ray", "tasks": 2}), progress=False)
    assert not (tmp_path / "out" / "work").exists()


def test_max_documents_is_refused_with_an_executor(tmp_path):
    with pytest.raises(ConfigError, match="max_documents caps one reader"):
        prepare(config(tmp_path / "out", executor=LOCAL, max_documents=100), progress=False)


def _jsonl_corpus(folder: Path, files: int = 4, per_file: int = 10, bad_in: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [json.dumps({"text": f"Story {f}-{i}: the little fox walked to the river with the old hen and they "
                                     f"counted {i} clouds in the sky."}) for i in range(per_file)]
        if f == bad_in:
            lines[2] = '{"text": "unterminated'
        (folder / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_strict_task_crash_names_its_rank_and_line_and_the_other_tasks_are_kept(tmp_path):
    data = _jsonl_corpus(tmp_path / "data", bad_in=2)
    cfg = config(tmp_path / "out", sources=[str(data)], executor={"type": "local", "tasks": 4, "workers": 1},
                 strict=True)
    with pytest.raises(DataError) as info:
        prepare(cfg, progress=False)
    message = str(info.value)
    assert "the process stage failed (1 of 4 task(s) unfinished: [2])" in message
    assert f"task 2: {data / 'part-2.jsonl'}:3" in message
    done = sorted(p.name for p in (tmp_path / "out" / "logs" / "process" / "completions").iterdir())
    assert done == ["00000", "00001", "00003"]
    assert not (tmp_path / "out" / "prepare_stats.json").exists()
    # The bad file fixed, the same command: only the failed task runs again, and the result is whole.
    _jsonl_corpus(tmp_path / "fixed")
    (data / "part-2.jsonl").write_text((tmp_path / "fixed" / "part-2.jsonl").read_text())
    marks = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "logs" / "process" / "completions").iterdir()}
    stats = prepare(cfg, progress=False)
    assert stats["documents_in"] == 40 == stats["documents_out"] + sum(stats["removed_by"].values())
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "logs" / "process" / "completions").iterdir()}
    assert {k: after[k] for k in marks} == marks and set(after) == {"00000", "00001", "00002", "00003"}


def test_an_output_folder_of_another_config_is_refused_naming_the_file_and_fingerprint(tmp_path):
    out = tmp_path / "out"
    prepare(config(out), progress=False)  # the in-process path's train.bin
    with pytest.raises(OutputError) as info:
        prepare(config(out, executor=LOCAL), progress=False)
    assert f"{out / 'prepare_stats.json'} has fingerprint" in str(info.value)
    assert "this config's is" in str(info.value) and "--force" in str(info.value)
    stats = prepare(config(out, executor=LOCAL), force=True, progress=False)
    assert not (out / "train.bin").exists() and (out / "train" / "00000.bin").is_file()
    # Another config's task files: refused as well, naming work/fingerprint.json.
    with pytest.raises(OutputError, match=r"work/fingerprint.json has fingerprint \w+, this config's is \w+"):
        prepare(config(out, executor=LOCAL, val_fraction=0.2), progress=False)
    assert stats["documents_in"] == 2000


_RUN = """
import sys
from tests.prepare.scale.helpers import config
from lit_llm.prepare.run import prepare
prepare(config(sys.argv[1], sources=[sys.argv[2]], executor={"type": "local", "tasks": 6, "workers": 2}),
        progress=False)
"""


def test_a_killed_run_resumes_with_only_unfinished_tasks_and_the_same_result(tmp_path):
    data = _jsonl_corpus(tmp_path / "data", files=6, per_file=1500)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(out), str(data)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    completions = out / "logs" / "process" / "completions"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(completions.glob("*"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # by its PID only, in the middle of the process stage, workers running
    proc.wait()
    # Its forked workers die with it (they would otherwise hold the folder's lock): the folder is free soon.
    deadline = time.monotonic() + 10
    while True:
        try:
            FolderLock(out, "test").acquire().release()
            break
        except OutputError:
            assert time.monotonic() < deadline, "a worker of the killed run still holds the output folder"
            time.sleep(0.1)
    finished = {p.name: p.stat().st_mtime_ns for p in completions.glob("*")}
    assert 2 <= len(finished) < 6, "the kill should land between the first and the last task"
    assert not (out / "prepare_stats.json").exists()
    stats = prepare(config(out, sources=[str(data)], executor={"type": "local", "tasks": 6, "workers": 2}),
                    progress=False)
    assert {name: completions.joinpath(name).stat().st_mtime_ns for name in finished} == finished  # skipped
    whole = prepare(config(tmp_path / "whole", sources=[str(data)], executor={"type": "local", "tasks": 6,
                                                                               "workers": 1}), progress=False)
    assert counts(stats) == counts(whole)
    assert rejected(out) == rejected(tmp_path / "whole")
    for split in ("train", "val"):
        assert np.array_equal(tokens(out, split), tokens(tmp_path / "whole", split))
