"""`lit-llm fit | validate | test | predict`: LightningCLI with lit_llm's guarantees for run folders.

Beyond Lightning's own CLI: `--restart true` starts a run over in a folder that holds an earlier run's checkpoints
(without it, such a fit refuses rather than leave the old `last.ckpt` to be read); checkpoints are saved
atomically and verified when loaded; SIGTERM and Ctrl-C save a resumable checkpoint and exit non-zero; options
are never abbreviated (`--trainer.max_step` is an error, not `max_steps`).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_llm.callbacks import use_lit_llm_displays
from lit_llm.checkpoint import load_checkpoint
from lit_llm.cli.runs import AtomicCheckpointIO, GracefulStop, prepare_run_folder, uses_default_checkpoint_io


class LitLLMCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument(
            "--restart", type=bool, default=False,
            help="start the run over when its checkpoint folder holds an earlier run's checkpoints (they are moved "
                 "to <folder>.previous); without it such a fit refuses. Resume instead with --ckpt_path last.",
        )

    def before_instantiate_classes(self) -> None:
        derive_run_paths(self.config[self.subcommand] if self.subcommand else self.config)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters before anything else: check the file first, so a
        # missing, truncated, corrupt or malicious one is named in one message.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            load_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        use_lit_llm_displays(trainer)
        return trainer

    def _use_atomic_io(self) -> None:
        if uses_default_checkpoint_io(self.trainer.strategy):
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def before_validate(self) -> None:
        self._use_atomic_io()

    before_test = before_validate
    before_predict = before_validate

    def fit(self, model: LightningModule, datamodule: LightningDataModule | None = None,
            ckpt_path: str | None = None, **kwargs: Any) -> None:
        self._use_atomic_io()
        restart = bool(self.config[self.subcommand].get("restart"))
        locks = prepare_run_folder(self.trainer, ckpt_path, restart)
        guard = GracefulStop()
        self.trainer.callbacks.insert(0, guard)
        guard.install()
        try:
            self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
        except SIGTERMException:
            guard.signal = guard.signal or signal.SIGTERM
        finally:
            guard.uninstall()
            for lock in locks:
                lock.release()
        if guard.signal is not None:
            print(f"lit-llm: {guard.exit_message(self.trainer.global_step)}", flush=True)
            raise SystemExit(guard.exit_code)


# Logger classes whose `save_dir` and callbacks whose `dirpath` are filled from trainer.default_root_dir when unset.
_SAVE_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger", "WandbLogger", "MLFlowLogger")


def derive_run_paths(config: Any) -> None:
    """One option moves a run: a logger without `save_dir` writes under `trainer.default_root_dir` and a
    ModelCheckpoint without `dirpath` writes to `<default_root_dir>/checkpoints`, as Lightning's own defaults do
    for the checkpoint folder when no logger is set. Paths a config gives explicitly are kept."""
    trainer = config.get("trainer")
    if trainer is None:
        return
    root = trainer.get("default_root_dir") or "."
    for entry in _entries(trainer.get("logger")):
        if str(entry.get("class_path", "")).rsplit(".", 1)[-1] in _SAVE_DIR_LOGGERS:
            init = entry.get("init_args")
            if init is not None and init.get("save_dir") is None:
                init["save_dir"] = root
    for entry in _entries(trainer.get("callbacks")):
        if str(entry.get("class_path", "")).rsplit(".", 1)[-1] == "ModelCheckpoint":
            init = entry.get("init_args")
            if init is not None and init.get("dirpath") is None:
                init["dirpath"] = str(Path(root) / "checkpoints")


def _entries(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    items = value if isinstance(value, list) else [value]
    return [item for item in items if hasattr(item, "get")]


def trainer_cli(args: list[str] | None = None, run: bool = True) -> LitLLMCLI:
    """LightningCLI in subclass mode: any stage and data module can be named by class_path in YAML."""
    return LitLLMCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        # Raise instead of printing the whole usage text, so main() can print one clear message; subcommands take
        # allow_abbrev from this parser.
        parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
        args=args,
        run=run,
    )
