"""Outputs written whole or not at all, and locks on the folders runs write into.

A file is written to a temporary name in its own folder, flushed to disk and renamed over the target: a reader
sees the old file or the new one, never a half-written one, whatever kills the writer (a signal, a full disk, a
crash). The temporary file lives beside the target so the rename never crosses a filesystem (a copy from
`TMPDIR` is not atomic). Written files get the permissions the user's umask gives new files (`mkstemp` alone
would leave them 0600).

`FolderLock` keeps a second run from writing the same folder at the same time: it refuses at once and names the
run that holds the folder. The lock is an advisory `flock` held as long as the file is open, so a run killed by
any signal, SIGKILL included, releases it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lit_llm.errors import LitLLMError

LOCK_FILE = ".lit_llm.lock"
TEMP_PREFIX = ".tmp-"


class OutputError(LitLLMError, OSError):
    """An output that cannot be written: a read-only folder, a full disk, a folder locked by another run."""


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(exc: OSError, path: str | Path, what: str = "write") -> str:
    """One line for an OSError a user can fix: a read-only folder, a full disk, a missing folder."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot {what} {path}: permission denied (the folder is read-only); choose a writable folder"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot {what} {path}: no space left on the device; free space or choose another folder"
    return f"cannot {what} {path}: {exc.strerror or exc}"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it is synced and renamed to `path`,
    on any error it is removed and `path` keeps its old content."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=folder)
    except OSError as exc:
        raise OutputError(describe_os_error(exc, path)) from None
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, LitLLMError):
            raise OutputError(describe_os_error(exc, path)) from None
        raise
    fsync_dir(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def remove_stale_temp_files(folder: str | Path) -> int:
    """Delete temporary files that a killed writer left in `folder` (call it while holding the folder's lock)."""
    removed = 0
    for p in Path(folder).glob(f"{TEMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


class FolderLock:
    """An exclusive lock on a folder for one run: `with FolderLock("data/demo", "prepare"): ...`.

    A second lock on the same folder, from this or any other process, raises OutputError naming the holder
    (its command, process id, host and start time)."""

    def __init__(self, folder: str | Path, what: str) -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        except OSError as exc:
            raise OutputError(describe_os_error(exc, self.folder)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputError(
                f"{self.folder} is in use by another run ({holder}); wait for it to finish, or write elsewhere"
            ) from None
        info = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *_: Any) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"{info.get('what', 'a run')}, pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}: "
            f"{info.get('command', '')}").strip()
