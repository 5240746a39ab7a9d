"""A frozen copy of the starting policy, for the stages that regularize towards it (DPO, PPO)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from lit_llm.lora import adapters_disabled


class FrozenReference:
    """Mixin for a stage built on `CausalLM`: `self.reference` is a second copy of the `init_from` weights.

    The copy is built beside the policy in `configure_model` (under FSDP, sharded like it), kept in eval mode
    through Lightning's `train()` calls, has no gradients, is outside the optimizer, and is left out of checkpoints:
    on loading, the live copy rebuilt from `init_from` fills its keys. Subclasses set `self.reference = None` in
    `__init__` (a class attribute would hide the registered module).

    With LoRA (`self.lora_config`), no copy is built: the reference is the policy with its adapters disabled, which
    computes exactly the frozen `init_from` weights. Use `reference_network()` for reference forward passes.
    """

    _base_reference = False  # True with LoRA: the reference is the policy with adapters disabled

    def configure_model(self) -> None:
        if self.model is not None:
            return
        init_state = self._init_state
        super().configure_model()
        if getattr(self, "lora_config", None) is not None:
            self._init_state = None
            self._base_reference = True
            return
        self._init_state = init_state
        reference = self._build_model(self._fsdp_wrap())
        self._init_state = None
        self.reference = reference.requires_grad_(False).eval()
        # Lightning warns about modules in eval mode when training starts; the reference is meant to be one.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)

    def has_reference(self) -> bool:
        """Whether reference log-probs can still be computed (not after the reference was freed)."""
        return self.reference is not None or self._base_reference

    def free_reference(self) -> None:
        self.reference = None
        self._base_reference = False

    @contextmanager
    def reference_network(self) -> Iterator[nn.Module]:
        """The network that computes the reference: the frozen copy, or under LoRA the policy with its adapters
        disabled and in eval mode (restored on exit)."""
        if not self._base_reference:
            yield self.reference
            return
        was_training = self.model.training
        self.model.eval()
        try:
            with adapters_disabled(self.model):
                yield self.model
        finally:
            self.model.train(was_training)

    def train(self, mode: bool = True) -> Any:
        super().train(mode)
        if getattr(self, "reference", None) is not None:
            self.reference.eval()  # Lightning puts the whole module in train mode at each epoch
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("reference.")]:
            del state[key]  # rebuilt from init_from; saving it would double the checkpoint

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if isinstance(getattr(self, "reference", None), nn.Module):
            checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})
