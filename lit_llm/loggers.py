"""Weights & Biases logging that works without an account: offline unless an API key is configured.

`WandbLogger` is Lightning's, with lit_llm's defaults: project "lit_llm", offline when no API key is found (the
run is written under `save_dir/wandb/offline-run-*` and uploaded later with `wandb sync`), and, at every saved
checkpoint, the checkpoint's path, stage and model config in the run summary. Stage configs put it beside a
CSVLogger, whose `metrics.csv` `lit-llm report` reads. `offline_history` reads an offline run's file back.

`CSVLogger` is Lightning's with `save_dir` optional: left out, `lit-llm fit` writes the log under the Trainer's
`default_root_dir`, so one option moves a whole run.
"""

from __future__ import annotations

import json
import netrc
import os
import struct
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

from lit_llm.errors import DataError


def wandb_api_key_configured() -> bool:
    """Whether W&B has credentials: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class CSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger; `save_dir` None: `lit-llm fit` fills in the Trainer's `default_root_dir` (the current
    folder outside the CLI). Other arguments as Lightning's (`name`, `version`, `prefix`, `flush_logs_every_n_steps`)."""

    def __init__(self, save_dir: str | None = None, name: str | None = "lightning_logs", **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir or ".", name=name, **kwargs)


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger, offline by default without an API key, recording checkpoint metadata.

    Args:
        project: W&B project.
        name: run name (None: W&B picks one).
        group: run group, e.g. one name for all stages of a pipeline.
        save_dir: folder the local run files go to (under `wandb/`); None: `lit-llm fit` puts them in the Trainer's
            `default_root_dir` (the current folder outside the CLI).
        offline: True writes locally only; False uploads; None (default) uploads only when an API key is configured
            (WANDB_API_KEY or `wandb login`), and respects WANDB_MODE when it is set.
        log_model: upload checkpoints as W&B artifacts (Lightning's option).
        tags: run tags.
    """

    def __init__(
        self,
        project: str = "lit_llm",
        name: str | None = None,
        group: str | None = None,
        save_dir: str | None = None,
        offline: bool | None = None,
        log_model: bool | str = False,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE")
            offline = mode in ("offline", "dryrun") if mode else not wandb_api_key_configured()
        # Absolute: W&B's service process is shared by every run of this process and resolves relative paths
        # against its own working directory, which is not ours after a chdir (notebooks, pipelines, tests).
        save_dir = str(Path(save_dir or ".").resolve())
        super().__init__(
            project=project, name=name, group=group, save_dir=save_dir, offline=offline, log_model=log_model,
            tags=tags, **kwargs,
        )  # fmt: skip

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        path = checkpoint_callback.last_model_path or checkpoint_callback.best_model_path
        if not path or not Path(path).is_file():
            return
        from lit_llm.checkpoint import checkpoint_meta, load_checkpoint

        try:
            meta = checkpoint_meta(load_checkpoint(path), path)
        except Exception:  # a checkpoint not written by a lit_llm stage still gets its path recorded
            meta = {}
        summary = self.experiment.summary
        summary["checkpoint/path"] = str(path)
        if meta:
            summary["checkpoint/stage"] = meta.get("stage")
            summary["checkpoint/model_config"] = meta.get("model_config")
            summary["checkpoint/prompt_style"] = meta.get("prompt_style")


# ---- reading an offline run back ---------------------------------------------------------------------------

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of chunks with a 7-byte header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    buf = path.read_bytes()
    if not buf.startswith(b":W&B"):
        raise DataError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(buf):
        room = _BLOCK - pos % _BLOCK
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        if pos + 7 + length > len(buf):  # the tail of a file still being written: not a record yet
            break
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending += data
        if kind in (_FULL, _LAST):
            records.append(pending)
            pending = b""
    return records


def offline_history(run_dir: str | Path) -> dict[str, Any]:
    """{"config": {...}, "summary": {...}, "history": [{metric: value, ...}, ...], "run": {project, group, name}}
    of the run in an `offline-run-*` folder (or its .wandb file)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(run_dir)
    if path.is_dir():
        files = sorted(path.glob("*.wandb"))
        if not files:
            raise DataError(f"{path} holds no .wandb run file")
        path = files[0]
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "run": {}}
    for data in _records(path):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"project": run.project, "group": run.run_group, "name": run.display_name}
        elif kind == "config":
            out["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"]["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            )
    return out
