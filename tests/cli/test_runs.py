"""Run folders under faults, as a user meets them: fit twice into one folder, SIGTERM and Ctrl-C, a save killed
mid-write, a flipped byte, bad --ckpt_path files, a folder in use, a read-only folder, abbreviated options."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import lightning.pytorch  # noqa: F401  imported before any output capture: Lightning's log handler keeps its stream
import pytest
import torch
import yaml

from lit_llm.atomic import FolderLock
from lit_llm.checkpoint import load_checkpoint
from lit_llm.cli.commands import main
from test_commands import write_config

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, token_dir: Path, max_steps: int = 6, callbacks: list | None = None, **trainer) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path, token_dir)
    cfg = yaml.safe_load(path.read_text())
    cfg["trainer"].update(max_steps=max_steps, val_check_interval=3, **trainer)
    # Only what these tests need: checkpoints, no sampling; a step checkpoint every 3 steps.
    cfg["trainer"]["callbacks"] = [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(tmp_path / "run" / "checkpoints"), "save_last": True,
                       "every_n_train_steps": 3, "save_top_k": -1, "filename": "step-{step:03d}",
                       "auto_insert_metric_name": False}},
        *(callbacks or []),
    ]
    path.write_text(yaml.safe_dump(cfg))
    return path


def _error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("lit-llm: error:") == 1 and "Traceback" not in err
    return err


def _step(path: Path) -> int:
    return load_checkpoint(path)["global_step"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_a_second_fit_into_a_run_folder_refuses_resumes_or_restarts(tmp_path, token_dir, capsys):
    config = _config(tmp_path, token_dir)
    ckpts = tmp_path / "run" / "checkpoints"
    main(["fit", "--config", str(config)])
    assert _step(ckpts / "last.ckpt") == 6
    err = _error(capsys, ["fit", "--config", str(config), "--trainer.max_steps", "9"])
    assert f"{ckpts} already holds checkpoints of an earlier run" in err
    assert "--ckpt_path last" in err and "--restart true" in err
    main(["fit", "--config", str(config), "--trainer.max_steps", "9", "--ckpt_path", "last"])
    assert _step(ckpts / "last.ckpt") == 9
    main(["fit", "--config", str(config), "--trainer.max_steps", "3", "--restart", "true"])
    assert _step(ckpts / "last.ckpt") == 3  # the new run, not the stale step-9 model
    assert _step(ckpts.with_name("checkpoints.previous") / "last.ckpt") == 9
    assert not list(ckpts.glob("last-v*.ckpt"))
    err = _error(capsys, ["fit", "--config", str(config), "--restart", "true", "--ckpt_path", "last"])
    assert "cannot be combined with --ckpt_path" in err


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, token_dir, capsys):
    err = _error(capsys, ["fit", "--config", str(_config(tmp_path, token_dir)), "--ckpt_path", "last"])
    assert "--ckpt_path last: no checkpoint to resume" in err


SIGNAL_AT_STEP = '''
import os, signal
import lightning.pytorch as pl

class SignalAt(pl.Callback):
    """Sends this process a real signal at the end of one training step (the scheduler, made deterministic)."""
    def __init__(self, step: int, signum: int = 15):
        self.step, self.signum = step, signum
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
'''


@pytest.fixture
def signal_module(tmp_path, monkeypatch):
    (tmp_path / "signal_at.py").write_text(textwrap.dedent(SIGNAL_AT_STEP))
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"class_path": "signal_at.SignalAt"}


def test_sigterm_saves_exits_non_zero_and_resumes_to_the_uninterrupted_weights(tmp_path, token_dir, signal_module):
    straight = _config(tmp_path / "a", token_dir, max_steps=8)
    main(["fit", "--config", str(straight)])
    interrupted = _config(tmp_path / "b", token_dir, max_steps=8,
                          callbacks=[{**signal_module, "init_args": {"step": 4, "signum": int(signal.SIGTERM)}}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "lit_llm", "fit", "--config", str(interrupted)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    last = tmp_path / "b" / "run" / "checkpoints" / "last.ckpt"
    assert "training stopped by SIGTERM at step 4" in proc.stdout and _step(last) == 4
    # The rerun resumes (without the signal) and ends where the uninterrupted run ended, weight for weight.
    cfg = yaml.safe_load(interrupted.read_text())
    cfg["trainer"]["callbacks"] = cfg["trainer"]["callbacks"][:1]
    interrupted.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(interrupted), "--ckpt_path", "last"])
    a, b = _weights(tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"), _weights(last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_and_exits_130_in_process(tmp_path, token_dir, signal_module, capsys):
    config = _config(tmp_path, token_dir, max_steps=8,
                     callbacks=[{**signal_module, "init_args": {"step": 2, "signum": int(signal.SIGINT)}}])
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config)])
    assert exc.value.code == 130
    # The signal came after GracefulStop's hook of step 2 had run: step 3 finishes, is saved, and training stops.
    assert _step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 3
    assert "training stopped by SIGINT at step 3" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_save_killed_mid_write_leaves_the_previous_last_checkpoint(tmp_path, token_dir, capsys, monkeypatch):
    config = _config(tmp_path, token_dir)
    main(["fit", "--config", str(config)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lit_llm.cli.runs.torch.save", full_disk)
    err = _error(capsys, ["fit", "--config", str(config), "--trainer.max_steps", "9", "--ckpt_path", "last"])
    assert "no space left on the device" in err and "checkpoints" in err
    assert last.read_bytes() == good and _step(last) == 6
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_flipped_byte_is_named_with_the_intact_checkpoints(tmp_path, token_dir, capsys):
    main(["fit", "--config", str(_config(tmp_path, token_dir))])
    ckpts = tmp_path / "run" / "checkpoints"
    last = ckpts / "last.ckpt"
    with zipfile.ZipFile(last) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor record
    data = bytearray(last.read_bytes())
    data[info.header_offset + 200] ^= 0x01
    last.write_bytes(bytes(data))
    err = _error(capsys, ["generate", "--checkpoint", str(last), "--prompt", "hi"])
    assert "fails its checksum" in err and "intact checkpoints beside it: step-003.ckpt, step-006.ckpt" in err


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_bad_ckpt_path_files_give_one_message(tmp_path, token_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, token_dir)
    truncated = tmp_path / "truncated.ckpt"
    main(["fit", "--config", str(config)])
    truncated.write_bytes((tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    (tmp_path / "random.ckpt").write_bytes(os.urandom(4096))
    torch.save({"state_dict": {}, "x": _Evil()}, tmp_path / "evil.ckpt")
    cases = {"missing.ckpt": "checkpoint not found", "truncated.ckpt": "could not read checkpoint",
             "random.ckpt": "not a PyTorch checkpoint", "evil.ckpt": "could not read checkpoint"}
    for name, message in cases.items():
        err = _error(capsys, ["fit", "--config", str(config), "--ckpt_path", str(tmp_path / name)])
        assert message in err and name in err
    assert not (tmp_path / "pwned").exists()


def test_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path, token_dir, capsys):
    config = _config(tmp_path, token_dir)
    with FolderLock(tmp_path / "run", "lit-llm fit"):
        err = _error(capsys, ["fit", "--config", str(config)])
    assert f"{tmp_path / 'run'} is in use by another run (lit-llm fit, pid {os.getpid()}" in err
    main(["fit", "--config", str(config)])  # released: the next run goes ahead


def test_a_read_only_output_folder_is_named(tmp_path, token_dir, capsys):
    read_only = Path("/sys/lit_llm_run")  # sysfs: no one may create folders there, root included
    if os.access("/sys", os.W_OK) and not _mkdir_fails(read_only):
        pytest.skip("no read-only folder to write into on this machine")
    config = _config(tmp_path, token_dir, default_root_dir=str(read_only))
    err = _error(capsys, ["fit", "--config", str(config)])
    assert "/sys/lit_llm_run" in err and "permission denied" in err


def _mkdir_fails(path: Path) -> bool:
    try:
        path.mkdir()
    except OSError:
        return True
    path.rmdir()
    return False


def test_options_are_not_abbreviated(tmp_path, token_dir, capsys):
    err = _error(capsys, ["fit", "--config", str(_config(tmp_path, token_dir)), "--trainer.max_step", "3"])
    assert "unrecognized arguments: --trainer.max_step" in err


def test_model_summary_shows_no_zero_flops(tmp_path, token_dir, caplog):
    with caplog.at_level("INFO"):
        main(["fit", "--config", str(_config(tmp_path, token_dir, max_steps=1, enable_model_summary=True))])
    text = caplog.text
    assert "Total params" in text and "Total Flops" not in text and "FLOPs" not in text


def test_rich_progress_bar_describes_a_step_bounded_run(tmp_path):
    from types import SimpleNamespace

    from lit_llm.callbacks import RichProgressBar

    bar = RichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=500, global_step=120)
    assert bar._get_train_description(1).strip() == "Epoch 1 · step 120/500"


def test_a_reward_checkpoint_as_sft_init_from_names_the_stage(tmp_path):
    from lit_llm.errors import ConfigError
    from lit_llm.model import Config, RewardModel
    from lit_llm.stages import SFTModule

    config = Config.from_name("tiny", n_layer=1, n_head=2, n_embd=16, intermediate_size=32, block_size=16,
                              vocab_size=64)
    model = RewardModel(config)
    path = tmp_path / "reward.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "lit_llm": {"stage": "reward", "model_config": config.to_dict(), "tokenizer": None}}, path)
    with pytest.raises(ConfigError, match="is a reward-model checkpoint .* the sft stage cannot start from it"):
        SFTModule(init_from=str(path)).setup("fit")


SIGNAL_ONCE = '''
import os
from pathlib import Path
import lightning.pytorch as pl

class SignalOnce(pl.Callback):
    """SIGTERM at one step, the first time only (a marker file remembers): a preemption the rerun does not meet."""
    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), 15)
'''


def _chain(tmp_path: Path, token_dir: Path, callbacks: list) -> Path:
    """A two-step pipeline: `up` trains, `down` starts from it with a learning rate of 1e-30 (updates below fp32
    precision), so down's weights are exactly the weights it started from."""
    up = _config(tmp_path / "up", token_dir, max_steps=6, callbacks=callbacks)
    down = _config(tmp_path / "down", token_dir, max_steps=2)
    cfg = yaml.safe_load(down.read_text())
    cfg["model"]["init_args"].update(init_from=str(tmp_path / "up" / "run"), learning_rate=1e-30, min_lr=1e-30)
    down.write_text(yaml.safe_dump(cfg))
    steps = [{"name": "up", "command": "fit", "config": str(up),
              "outputs": [str(tmp_path / "up/run/checkpoints/last.ckpt")]},
             {"name": "down", "command": "fit", "config": str(down),
              "outputs": [str(tmp_path / "down/run/checkpoints/last.ckpt")]}]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"state": str(tmp_path / "state.json"), "steps": steps}))
    return path


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_pipeline_rerun_after_a_config_edit_chains_the_new_weights(tmp_path, token_dir):
    pipeline = _chain(tmp_path, token_dir, [])
    main(["pipeline", "--config", str(pipeline)])
    up, down = tmp_path / "up/run/checkpoints/last.ckpt", tmp_path / "down/run/checkpoints/last.ckpt"
    old = _weights(up)
    assert _same(up, down)
    up_config = tmp_path / "up" / "config.yaml"
    cfg = yaml.safe_load(up_config.read_text())
    cfg["model"]["init_args"]["learning_rate"] = 0.002
    up_config.write_text(yaml.safe_dump(cfg))
    main(["pipeline", "--config", str(pipeline)])
    assert not all(torch.equal(old[k], v) for k, v in _weights(up).items())  # up really retrained
    assert _same(up, down)  # and down started from the new up, not the stale one


def test_a_pipeline_interrupted_in_a_step_resumes_it(tmp_path, token_dir, capsys):
    (tmp_path / "signal_once.py").write_text(textwrap.dedent(SIGNAL_ONCE))
    sys.path.insert(0, str(tmp_path))
    try:
        once = {"class_path": "signal_once.SignalOnce", "init_args": {"step": 3, "marker": str(tmp_path / "m")}}
        pipeline = _chain(tmp_path, token_dir, [once])
        with pytest.raises(SystemExit) as exc:
            main(["pipeline", "--config", str(pipeline)])
        assert exc.value.code == 128 + signal.SIGTERM
        assert "pipeline step 'up' was interrupted" in capsys.readouterr().err
        up = tmp_path / "up/run/checkpoints/last.ckpt"
        assert _step(up) == 3
        main(["pipeline", "--config", str(pipeline)])
        out = capsys.readouterr().out
        assert f"up (interrupted; resumes from {up})" in out and f"--ckpt_path={up}" in out
        assert _step(up) == 6
    finally:
        sys.path.remove(str(tmp_path))
    # The resumed chain equals one never interrupted.
    straight = _chain(tmp_path / "straight", token_dir, [])
    main(["pipeline", "--config", str(straight)])
    assert _same(up, tmp_path / "straight/up/run/checkpoints/last.ckpt")
    assert _same(tmp_path / "down/run/checkpoints/last.ckpt", up)
