"""A frozen copy of the starting policy, for the stages that regularize towards it (DPO, PPO)."""

from __future__ import annotations

import warnings
from typing import Any


class FrozenReference:
    """Mixin for a stage built on `CausalLM`: `self.reference` is a second copy of the `init_from` weights.

    The copy is built beside the policy in `configure_model` (under FSDP, sharded like it), kept in eval mode
    through Lightning's `train()` calls, has no gradients, is outside the optimizer, and is left out of checkpoints:
    on loading, the live copy rebuilt from `init_from` fills its keys. Subclasses set `self.reference = None` in
    `__init__` (a class attribute would hide the registered module).
    """

    def configure_model(self) -> None:
        if self.model is not None:
            return
        init_state = self._init_state
        super().configure_model()
        self._init_state = init_state
        reference = self._build_model(self._fsdp_wrap())
        self._init_state = None
        self.reference = reference.requires_grad_(False).eval()
        # Lightning warns about modules in eval mode when training starts; the reference is meant to be one.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)

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
        if getattr(self, "reference", None) is not None:
            checkpoint["state_dict"].update({f"reference.{k}": v for k, v in self.reference.state_dict().items()})
