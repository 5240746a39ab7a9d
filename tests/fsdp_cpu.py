"""FSDP on CPU processes (gloo), for tests: Lightning refuses an `FSDPStrategy` without a GPU, and torch's FSDP
needs `device_id=cpu` to shard CPU modules. The sharding, gathers and reductions are FSDP's own."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from lightning.pytorch.strategies import FSDPStrategy


class CPUFSDPStrategy(FSDPStrategy):
    """`FSDPStrategy` whose wrap context shards on the CPU (a subclass, so Lightning's GPU check lets it through)."""

    @contextmanager
    def model_sharded_context(self):
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import enable_wrap

        with enable_wrap(wrapper_cls=FullyShardedDataParallel, sharding_strategy=self.sharding_strategy,
                         device_id=torch.device("cpu"), **self.kwargs):  # fmt: skip
            yield


@contextmanager
def own_process_group():
    """Around an in-process FSDP fit: afterwards the process group is destroyed and the environment variables
    Lightning set for it (MASTER_PORT, ...) are restored, so later multi-process tests pick their own port."""
    import os

    import torch.distributed as dist

    saved = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)
