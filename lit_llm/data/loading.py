"""Data loaders that resume mid-epoch: a resumed run neither repeats nor skips the batches of the interrupted epoch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)


def world_of(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of a Trainer; (0, 1) without one."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def example_loader(
    items: list[Any], batch_size: int, collate_fn: Any, shuffle: bool, seed: int, num_workers: int, trainer: Any
) -> DataLoader:
    """A loader of in-memory examples: training loaders (`shuffle`) shuffle by (seed, epoch), deal the examples to
    the Trainer's ranks and resume mid-epoch; evaluation loaders keep the order."""
    kwargs = dict(batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers)
    if not shuffle:
        return DataLoader(items, shuffle=False, **kwargs)
    rank, world = world_of(trainer)
    sampler = ExampleSampler(items, shuffle=True, seed=seed, num_replicas=world, rank=rank)
    return ResumableDataLoader(items, sampler=sampler, **kwargs)


class ExampleSampler(DistributedSampler):
    """DistributedSampler that can skip the samples of the current epoch consumed before a resume.

    The order of each epoch is a function of (seed, epoch) alone, so a resumed run sees the same order; it
    subclasses DistributedSampler so Lightning does not wrap it again under DDP.
    """

    def __init__(self, dataset: Any, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(list(super().__iter__())[skip:])


class ResumableDataLoader(DataLoader):
    """A DataLoader that remembers how many samples of the epoch it handed out.

    Lightning stores `state_dict()` in the checkpoint and calls `load_state_dict()` on resume, so a
    resumed run neither repeats nor skips batches. The count is kept in the main process, so it is
    exact with worker processes too.
    """

    sampler: DistributedSampler  # with `epoch` and `skip`: WindowSampler, ExampleSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self):
        state, self._resume = self._resume, None
        self.consumed = 0
        if state is not None and state["epoch"] == self.sampler.epoch and state["consumed"] < len(self.sampler):
            self.sampler.skip = self.consumed = state["consumed"]
        for batch in super().__iter__():
            self.consumed += self.batch_size
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "consumed": self.consumed, "world_size": self.sampler.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("world_size", self.sampler.num_replicas) != self.sampler.num_replicas:
            log.warning(
                "resuming on %d processes from a checkpoint written by %d: the interrupted epoch restarts",
                self.sampler.num_replicas,
                state["world_size"],
            )
            return
        self._resume = dict(state)
