"""PretrainDataModule: windows of block_size + 1 tokens from memory-mapped token files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lit_llm.data.connect import DataInfo, DataSpec
from lit_llm.data.loading import ResumableDataLoader, world_of
from lit_llm.prepare.run import PrepareConfig, prepare
from lit_llm.prepare.shards import ShardedTokens, TokenFile, open_token_files
from lit_llm.text.tokenizer import Tokenizer
from lit_llm.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class WindowDataset(Dataset):
    """Item `start` is the window tokens[start : start + block_size + 1], split into inputs and targets."""

    def __init__(self, tokens: np.ndarray, block_size: int) -> None:
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        window = torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))
        return {"input_ids": window[:-1], "targets": window[1:]}


def spread_order(n: int) -> np.ndarray:
    """0..n-1 ordered so that every prefix is spread evenly over the range: item i is the rank of frac(i / φ)
    among all n such values (a golden-ratio Weyl sequence). The first k items are never more than about
    1.6 n / k apart, and every other item (what one of two ranks gets) is spread as well. No seed: fixed."""
    position = (np.arange(n, dtype=np.float64) * ((5**0.5 - 1) / 2)) % 1.0
    order = np.empty(n, dtype=np.int64)
    order[np.argsort(position, kind="stable")] = np.arange(n, dtype=np.int64)
    return order


class WindowSampler(DistributedSampler):
    """Window start offsets for one rank: one global order per epoch, dealt out round-robin to ranks.

    Sequential mode walks the corpus in order; random mode shifts the window grid by a random offset
    each epoch and shuffles the windows, so every token is seen about once per epoch; spread mode (without
    shuffle, for validation) takes the grid's windows in `spread_order`, the same every time, so a limited
    validation (`limit_val_batches`) scores windows from the whole file and runs compare. Because every
    rank derives the same global order, N ranks at micro-batch b see exactly the windows one process
    sees at micro-batch N*b. It subclasses DistributedSampler so Lightning does not wrap it again.
    """

    def __init__(
        self, dataset: WindowDataset, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0,
        spread: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        if spread and shuffle:
            raise ValueError("WindowSampler: spread is an order of its own; it excludes shuffle")
        self.spread = spread
        self.block_size = dataset.block_size
        self.num_tokens = len(dataset.tokens)
        self.num_windows = (self.num_tokens - 1) // self.block_size
        self.skip = 0  # samples of the current epoch already consumed before a resume

    def __len__(self) -> int:
        return self.num_windows // self.num_replicas

    def global_order(self, epoch: int) -> np.ndarray:
        starts = np.arange(self.num_windows, dtype=np.int64) * self.block_size
        if self.spread:
            return starts[spread_order(self.num_windows)]
        if not self.shuffle:
            return starts
        rng = np.random.default_rng([self.seed, epoch])
        max_shift = self.num_tokens - 1 - self.num_windows * self.block_size
        return rng.permutation(starts) + int(rng.integers(0, max_shift + 1))

    def __iter__(self) -> Iterator[int]:
        n = len(self)
        mine = self.global_order(self.epoch)[self.rank : n * self.num_replicas : self.num_replicas]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:].tolist())


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def token_paths(path: Path) -> list[Path]:
    """The token files `path` names: itself, every .bin in it (a folder of shards), or those a glob matches
    (data_dir/"train-*.bin"), in sorted order; [] when there are none."""
    if path.is_dir():
        return sorted(path.glob("*.bin"))
    if _is_glob(path.name):
        return sorted(p for p in path.parent.glob(path.name) if p.is_file())
    return [path] if path.exists() else []


class PretrainDataModule(LightningDataModule):
    """Next-token windows from `train.bin` / `val.bin` token files in `data_dir`.

    Args:
        data_dir: folder with the token files (and their .json sidecars and tokenizer.json).
        block_size: tokens per training example (each window holds block_size + 1 tokens).
        batch_size: micro-batch size per process.
        sampling: "random" (shuffled windows, new grid offset each epoch) or "sequential".
        train_file: token file for training, relative to data_dir; or a folder or glob of token shards
            ("train-*.bin"), read in sorted order as one corpus (each shard's documents end with EOS, so nothing is
            merged first).
        val_file: token file (folder, glob) for validation; when absent, `val_fraction` of the training tokens is
            held out.
        val_fraction: tail of the training tokens held out for validation when there is no val_file.
        vocab_size: vocabulary size; required only for raw token files without a sidecar (nanoGPT's).
        prepare: the data pipeline that writes the token files into data_dir (its output_dir is replaced
            by data_dir): a data config YAML such as configs/data/demo.yaml, or the options inline. It runs in
            `prepare_data` and is skipped when data_dir already holds the outputs of the same config and
            inputs. None: data_dir must already hold the token files (e.g. from `lit-llm prepare`, or nanoGPT's).
        num_workers: DataLoader worker processes.
        seed: seed of the window order.
    """

    def __init__(
        self,
        data_dir: str = "data/pretrain",
        block_size: int = 128,
        batch_size: int = 16,
        sampling: Literal["random", "sequential"] = "random",
        train_file: str = "train.bin",
        val_file: str | None = "val.bin",
        val_fraction: float = 0.0,
        vocab_size: int | None = None,
        prepare: PrepareConfig | str | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if sampling not in ("random", "sequential"):
            raise ConfigError(f"data.sampling must be 'random' or 'sequential', got {sampling!r}")
        if block_size < 1 or batch_size < 1:
            raise ConfigError(f"data.block_size and data.batch_size must be positive, got {block_size}, {batch_size}")
        if isinstance(prepare, PrepareConfig):
            # Checkpoints keep the hyperparameters; plain data keeps them loadable with weights_only=True.
            prepare = prepare.to_dict()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.prepare_config()  # a bad pipeline option fails here, before any data is read
        self.block_size = block_size
        self.batch_size = batch_size
        self.train: TokenFile | None = None
        self.train_tokens: np.ndarray | None = None
        self.val_tokens: np.ndarray | None = None
        self._tokenizer: Tokenizer | None = None

    # ---- preparation (rank 0, once) ---------------------------------------------------------------

    def prepare_data(self) -> None:
        config = self.prepare_config()
        if config is None:
            return
        stats = prepare(config)
        if not stats.get("up_to_date"):
            from lit_llm.prepare.stats import format_table

            log.info("prepared %s:\n%s", self.data_dir, format_table(stats))

    def prepare_config(self) -> PrepareConfig | None:
        """The pipeline config with its output_dir set to data_dir, or None without one."""
        config = self.hparams.prepare
        if config is None:
            return None
        if isinstance(config, (str, Path)):
            config = PrepareConfig.from_yaml(config)
        elif isinstance(config, dict):
            config = PrepareConfig.from_dict(config, where="data.prepare")
        return replace(config, output_dir=str(self.data_dir))

    # ---- per-process setup ----------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        hp = self.hparams
        train_path = self.data_dir / hp.train_file
        train_paths = token_paths(train_path)
        if not train_paths:
            hint = "" if hp.prepare else " (set data.prepare to build it from raw text, or run lit-llm prepare)"
            if train_path.is_dir() or _is_glob(hp.train_file):
                raise DataError(f"no token files (*.bin) match {train_path}{hint}")
            raise DataError(f"token file not found: {train_path}{hint}")
        opened, tokens = open_token_files(train_paths, vocab_size=hp.vocab_size)
        self.train = opened[0]
        val_paths = token_paths(self.data_dir / hp.val_file) if hp.val_file else []
        if val_paths:
            val_files, self.val_tokens = open_token_files(val_paths, vocab_size=self.train.vocab_size)
            opened += val_files
        elif hp.val_fraction > 0:
            cut = int(len(tokens) * (1 - hp.val_fraction))
            tokens, self.val_tokens = tokens.split(cut) if isinstance(tokens, ShardedTokens) else (tokens[:cut],
                                                                                                   tokens[cut:])
        self._check_tokenizer(opened)
        self.train_tokens = tokens
        needed = self.block_size + 1
        if len(tokens) < needed:
            raise DataError(
                f"data.block_size {self.block_size} needs at least {needed} tokens, but {train_path} has {len(tokens)}"
            )
        windows = (len(tokens) - 1) // self.block_size
        per_step = self.batch_size * self._world()[1]
        if windows < per_step:
            raise DataError(
                f"{train_path} holds {windows} windows of block_size {self.block_size}, fewer than one batch "
                f"(batch_size {self.batch_size} x {self._world()[1]} processes)"
            )
        if self.val_tokens is not None and len(self.val_tokens) < needed:
            log.warning("validation split has %d tokens, fewer than one window: validation is skipped", len(self.val_tokens))
            self.val_tokens = None

    def connect(self, spec: DataSpec) -> DataInfo:
        """Check the windows fit the model (`spec.block_size`); the tokenizer is the token files' own, whatever the
        stage has. Returns the tokenizer (None for raw token files without one), vocab size and batch shape."""
        if spec.block_size is not None and self.block_size > spec.block_size:
            raise ConfigError(f"data.block_size ({self.block_size}) exceeds the model's block_size ({spec.block_size})")
        self.setup()
        return DataInfo(self.tokenizer, self.vocab_size, self.block_size, self.batch_shape, None, self.batch_size)

    @property
    def batch_shape(self) -> tuple[int, int]:
        """(rows, tokens) of every training batch, for counting FLOPs."""
        return self.batch_size, self.block_size

    def _check_tokenizer(self, files: list[TokenFile]) -> None:
        """The tokenizer beside the token files must hold every id they use (open_token_file has already checked
        it against the hash a sidecar records; this catches files from before hashes were recorded)."""
        path = self._tokenizer_path()
        if path is None or not path.is_file():
            return
        tok = self.tokenizer
        for tf in files:
            if tf.max_token_id is not None and tf.max_token_id >= tok.vocab_size:
                raise DataError(
                    f"{tf.path} holds token id {tf.max_token_id}, but its tokenizer {tok.path} has only "
                    f"{tok.vocab_size} tokens: the token files were not made with this tokenizer; rerun the "
                    "prepare that made them"
                )

    def _world(self) -> tuple[int, int]:
        return world_of(self.trainer)

    @property
    def vocab_size(self) -> int:
        if self.train is None:
            self.setup()
        return self.train.vocab_size

    @property
    def tokenizer(self) -> Tokenizer | None:
        if self._tokenizer is None:
            path = self._tokenizer_path()
            if path is not None:
                self._tokenizer = Tokenizer(path)
        return self._tokenizer

    def _tokenizer_path(self) -> Path | None:
        """The tokenizer the training file's sidecar names, else data_dir/tokenizer.json if there is one."""
        path = self.train.tokenizer if self.train is not None else None
        if path is None:
            candidate = self.data_dir / "tokenizer.json"
            path = candidate if candidate.exists() else None
        return path

    def _loader(self, tokens: np.ndarray, shuffle: bool, spread: bool = False) -> ResumableDataLoader:
        rank, world = self._world()
        dataset = WindowDataset(tokens, self.block_size)
        sampler = WindowSampler(dataset, shuffle=shuffle, seed=self.hparams.seed, num_replicas=world, rank=rank,
                                spread=spread)
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_tokens, shuffle=self.hparams.sampling == "random")

    def val_dataloader(self) -> DataLoader | list:
        if self.val_tokens is None:
            return []
        if (len(self.val_tokens) - 1) // self.block_size < self.batch_size * self._world()[1]:
            # Few validation windows: one smaller batch rather than none.
            rank, world = self._world()
            dataset = WindowDataset(self.val_tokens, self.block_size)
            sampler = WindowSampler(dataset, shuffle=False, num_replicas=world, rank=rank, spread=True)
            return DataLoader(dataset, batch_size=max(1, len(sampler)), sampler=sampler)
        return self._loader(self.val_tokens, shuffle=False, spread=True)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()
