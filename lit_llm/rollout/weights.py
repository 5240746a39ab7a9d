"""The policy's full weights for a rollout engine, a part at a time: `weight_chunks(model)` yields lit_llm state
dict chunks, the root's own weights (embeddings, final norm, head) and then one per Block. A plain (or DDP) model
gives its state dict (LoRA adapters merged) cut that way. A model sharded by FSDP (each Block a unit, then the
root) gives each chunk gathered with `summon_full_params` while it is in use: no rank ever holds more than one
layer unsharded besides its shards. Every rank must take the chunks together (the gathers are collectives)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from lit_llm.lora import merged_state_dict

# The prefixes FSDP and activation checkpointing put in front of the wrapped module's names.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def clean_name(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def weight_chunks(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """The model's weights by lit_llm name, in chunks valid until the next one is asked for (copy what is kept)."""
    if not is_fsdp(model):
        yield from _by_layer(merged_state_dict(model))
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # The root first: its first gather also initializes FSDP's state for the whole tree, which a Block's gather
    # before any forward pass would otherwise claim as a root of its own.
    with FSDP.summon_full_params(model, recurse=False, writeback=False):
        rest = {clean_name(n): p.detach() for n, p in model.named_parameters()}
        yield {n: p for n, p in rest.items() if not n.startswith("blocks.")}
    inner = model.module if isinstance(model, FSDP) else model
    for i, block in enumerate(inner.blocks):
        with FSDP.summon_full_params(block, recurse=True, writeback=False):
            yield {f"blocks.{i}.{clean_name(n)}": p.detach() for n, p in block.named_parameters()}


def _by_layer(state: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """A state dict as the same chunks the FSDP path gives: the root's own weights, then each Block's, so the
    engine's copies are made a layer at a time here too."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    root = {}
    for name, tensor in state.items():
        if name.startswith("blocks."):
            layers.setdefault(int(name.split(".")[1]), {})[name] = tensor
        else:
            root[name] = tensor
    yield root
    for i in sorted(layers):
        yield layers[i]
