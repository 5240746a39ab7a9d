"""`FrozenReference`: the starting policy, kept frozen for the stages that regularize towards it (DPO, PPO)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from lit_llm.lora import adapters_disabled

PREFIX = "reference."


class FrozenReference(nn.Module):
    """A component a stage holds as `self.reference`: a second copy of the `init_from` weights (`network`), in
    eval mode through Lightning's `train()` calls, without gradients, outside the optimizer (a stage's `_trained()`
    leaves it out) and out of checkpoints (`strip` / `fill` in the stage's checkpoint hooks). Under FSDP the stage
    builds the copy sharded like the policy.

    With LoRA no copy is built: `policy` returns the policy network, and the reference is that network with its
    adapters disabled, which computes exactly the frozen `init_from` weights. Forward passes go through
    `with reference.network() as net:`."""

    def __init__(self, network: nn.Module | None = None, policy: Callable[[], nn.Module] | None = None) -> None:
        super().__init__()
        self.copy = network.requires_grad_(False).eval() if network is not None else None
        self._policy = policy  # a function, not a module: the policy is registered by the stage, not here
        self.train(False)
        if network is not None:
            # Lightning warns about modules in eval mode when training starts; the reference is meant to be one.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode", category=UserWarning)

    @classmethod
    def of_stage(cls, stage: Any, wrap: Any = None) -> FrozenReference:
        """The reference of `stage` (DPO, PPO, GRPO): under LoRA its policy with adapters off, else a frozen copy of
        the starting weights, built (and under FSDP sharded by `wrap`) while the stage still holds them."""
        from lit_llm.model import GPT

        if stage.lora_config is not None:
            return cls(policy=lambda: stage.model)
        return cls(stage.policy.build(GPT, wrap))

    @property
    def available(self) -> bool:
        """Whether reference log-probs can still be computed (not after `free()`)."""
        return self.copy is not None or self._policy is not None

    def free(self) -> None:
        self.copy = None
        self._policy = None

    @contextmanager
    def network(self) -> Iterator[nn.Module]:
        """The network that computes the reference: the frozen copy, or under LoRA the policy with its adapters
        disabled and in eval mode (restored on exit)."""
        if self.copy is not None:
            yield self.copy
            return
        if self._policy is None:
            raise RuntimeError("the reference model was freed")
        model = self._policy()
        was_training = model.training
        model.eval()
        try:
            with adapters_disabled(model):
                yield model
        finally:
            model.train(was_training)

    def train(self, mode: bool = True) -> Any:
        return super().train(False)  # Lightning puts the whole LightningModule in train mode at each epoch

    @staticmethod
    def strip(checkpoint: dict[str, Any]) -> None:
        """Leave the reference out of a checkpoint: it is rebuilt from init_from, saving it would double the file."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(PREFIX)]:
            del state[key]

    def fill(self, checkpoint: dict[str, Any]) -> None:
        """Before loading a checkpoint into the stage: the live reference's weights stand in for the left-out ones."""
        checkpoint["state_dict"].update({PREFIX + k: v for k, v in self.state_dict().items()})
