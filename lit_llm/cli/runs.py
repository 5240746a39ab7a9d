"""Run folders that never mislead: no stale checkpoint is left to be read, saves are atomic, an interrupt is a
failure that resumes.

`lit-llm fit` (through `lit_llm.cli.commands.LitLLMCLI`) uses three pieces:

- `prepare_run_folder` before training: the run's folders must be writable; a run folder is locked for one run at
  a time; a folder that already holds checkpoints is either resumed (`--ckpt_path`) or started over
  (`--restart true` moves the old checkpoints aside), never silently mixed. Lightning's `ModelCheckpoint` would
  otherwise write `last-v1.ckpt` beside the old `last.ckpt`, which every loader reads.
- `AtomicCheckpointIO`: each checkpoint is written to a temporary file in its own folder, synced and renamed, so a
  kill or a full disk mid-save leaves the previous file whole; loading checks every record's CRC (a flipped byte
  is named) and reads with `weights_only=True`.
- `GracefulStop`: SIGTERM (a scheduler's preemption) or a first Ctrl-C stops training at the end of the current
  step after saving a resumable `last.ckpt`; the command then exits with 128 + the signal number, so neither a
  shell nor the pipeline takes a half-trained model for a finished one.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lit_llm.atomic import FolderLock, OutputError, atomic_write, describe_os_error
from lit_llm.checkpoint import load_checkpoint
from lit_llm.errors import ConfigError

PREVIOUS_SUFFIX = ".previous"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, with saves that are whole or absent and loads that verify the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_write(path) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)


def checkpoint_folders(trainer: pl.Trainer) -> list[Path]:
    """The folders the run's ModelCheckpoint callbacks write to (their dirpath, or Lightning's default)."""
    folders = []
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint):
            folders.append(Path(cb.dirpath) if cb.dirpath else Path(trainer.default_root_dir) / "checkpoints")
    return list(dict.fromkeys(folders))


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(describe_os_error(exc, folder)) from None


def _logger_folders(trainer: pl.Trainer) -> list[Path]:
    folders = []
    for logger in trainer.loggers:
        save_dir = getattr(logger, "save_dir", None)
        if save_dir:
            folders.append(Path(save_dir))
    return folders


def prepare_run_folder(trainer: pl.Trainer, ckpt_path: str | None, restart: bool) -> list[FolderLock]:
    """Check, lock and clear the run's folders before `fit`; returns the locks to release after it.

    Only global rank 0 acts (the other ranks start after it, or write nothing of their own)."""
    if ckpt_path is not None and restart:
        raise ConfigError("--restart true starts the run over; it cannot be combined with --ckpt_path (resume)")
    if rank_zero_only.rank != 0:
        return []
    root = Path(trainer.default_root_dir)
    ckpt_folders = checkpoint_folders(trainer)
    for folder in dict.fromkeys([root, *ckpt_folders, *_logger_folders(trainer)]):
        _check_writable(folder)
    locks: list[FolderLock] = []
    try:
        # The lock file lives in the run folder, not among the checkpoints (Lightning warns about a non-empty one).
        outside = [f for f in ckpt_folders if not f.resolve().is_relative_to(root.resolve())]
        for folder in dict.fromkeys([root, *outside]):
            locks.append(FolderLock(folder, "lit-llm fit").acquire())
        existing = [(f, sorted(p.name for p in f.glob("*.ckpt"))) for f in ckpt_folders]
        existing = [(f, names) for f, names in existing if names]
        if ckpt_path == "last" and not existing:
            raise ConfigError(f"--ckpt_path last: no checkpoint to resume in {', '.join(map(str, ckpt_folders))}; "
                              "leave out --ckpt_path to start a new run")
        if ckpt_path is None:
            for folder, names in existing:
                aside = folder.with_name(folder.name + PREVIOUS_SUFFIX)
                if not restart:
                    raise ConfigError(
                        f"{folder} already holds checkpoints of an earlier run ({_describe(names)}). "
                        f"Resume that run with --ckpt_path last, or start over with --restart true "
                        f"(moves them to {aside})"
                    )
                _move_aside(folder, aside)
                rank_zero_info(f"--restart: moved the earlier run's checkpoints from {folder} to {aside}")
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def _describe(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _move_aside(folder: Path, aside: Path) -> None:
    # The lock file moves with the folder; the lock itself stays held on the open file until the run ends.
    try:
        if aside.exists():
            shutil.rmtree(aside)
        folder.rename(aside)
        folder.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, folder, "move aside")) from None


class GracefulStop(pl.Callback):
    """SIGTERM or a first Ctrl-C: finish the current step, save `last.ckpt`, stop; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.saved: list[str] = []
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Route SIGTERM and SIGINT here (main thread only: elsewhere Python allows no handlers)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step
        if self.signal is None:
            print(f"\nreceived {signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                  f"(Ctrl-C again to stop at once)", flush=True)
        self.signal = signum

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        # Every rank takes the same decision, so the checkpoint save (a collective) runs everywhere or nowhere.
        if trainer.strategy.reduce_boolean_decision(self.signal is not None, all=False):
            self.signal = self.signal or signal.SIGTERM
            self._save(trainer)
            # Lightning then stops the loop after this batch, on every rank, as for its own SIGTERM handling.
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # Lightning's SIGTERM handling can stop inside validation, before any training batch ends.
        if isinstance(exception, SIGTERMException) and not self.saved and trainer.global_step > 0:
            self.signal = self.signal or signal.SIGTERM
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.save_last]
        for cb in callbacks:
            cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))
            self.saved.append(cb.last_model_path)
        if not callbacks:
            path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            trainer.save_checkpoint(path)
            self.saved.append(str(path))

    def exit_message(self, step: int) -> str:
        name = signal.Signals(self.signal or signal.SIGTERM).name
        where = ", ".join(self.saved) if self.saved else "nothing (stopped before the first step)"
        return (f"training stopped by {name} at step {step}; saved {where}. "
                f"Resume with --ckpt_path {self.saved[0] if self.saved else 'last'}")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal or signal.SIGTERM)


def uses_default_checkpoint_io(strategy: Any) -> bool:
    return type(strategy.checkpoint_io) is TorchCheckpointIO
