"""Low-rank adapters (LoRA, Hu et al. 2021) on the linear layers of a GPT, in plain PyTorch (no PEFT needed).

A wrapped layer computes `W x + b + (alpha / r) * B A dropout(x)` with `W`, `b` the frozen base weights and
`A` (r x in), `B` (out x r) the trained adapter; `B` starts at zero, so a fresh adapter leaves the output unchanged.
`LoRALinear` is an `nn.Linear` that keeps the base parameters under their own names (`weight`, `bias`), so the
state-dict keys of the base model do not change (`blocks.0.attn.qkv.weight`) and only `lora_A` / `lora_B` are
added beside them. `merge_lora` folds the adapters into the base weights and puts plain `nn.Linear`s back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lit_llm.errors import ConfigError, from_known_keys

# Target name -> (module path inside a Block, attribute); "lm_head" sits on the model itself.
TARGETS = {"qkv": ("attn", "qkv"), "attn_proj": ("attn", "proj"), "fc": ("mlp", "fc"), "mlp_proj": ("mlp", "proj")}
ALL_TARGETS = (*TARGETS, "lm_head")


@dataclass
class LoRAConfig:
    """Rank `r`, scaling `alpha` (the update is multiplied by alpha / r), dropout on the adapter input, and the
    layers to adapt: any of qkv, attn_proj (attention), fc, mlp_proj (MLP) in every block, and lm_head."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["qkv", "attn_proj"])

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        self.targets = list(self.targets)
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"model.lora.r must be an integer > 0, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or self.alpha <= 0:
            raise ConfigError(f"model.lora.alpha must be > 0, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model.lora.dropout must be in [0, 1), got {self.dropout!r}")
        unknown = [t for t in self.targets if t not in ALL_TARGETS]
        if unknown:
            raise ConfigError(
                f"model.lora.targets: unknown layer(s) {', '.join(map(repr, unknown))}; "
                f"choose among {', '.join(ALL_TARGETS)}"
            )
        if not self.targets:
            raise ConfigError(f"model.lora.targets is empty; choose among {', '.join(ALL_TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"model.lora.targets lists a layer twice: {self.targets}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    @classmethod
    def from_dict(cls, values: dict[str, Any] | LoRAConfig) -> LoRAConfig:
        if isinstance(values, LoRAConfig):
            return values
        if not isinstance(values, dict):
            raise ConfigError(f"model.lora must be a mapping (r, alpha, dropout, targets), got {values!r}")
        return from_known_keys(cls, values, "model.lora")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LoRALinear(nn.Linear):
    """An `nn.Linear` holding frozen base `weight` / `bias` plus a trained low-rank update `lora_B @ lora_A`."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the same Parameter objects: no copy, same state-dict keys
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.adapter_enabled = True

    def reset_parameters(self) -> None:  # the base weights are loaded, never re-initialized here
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if not self.adapter_enabled:
            return out
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) * B @ A in float32, the change the adapter makes to the base weight."""
        return self.lora_B.detach().float() @ self.lora_A.detach().float() * self.scaling

    def merged(self) -> nn.Linear:
        """A plain `nn.Linear` with the update folded into (a copy of) the base weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        with torch.no_grad():
            weight = self.weight.detach().float() + self.delta_weight().float()
        linear.weight = nn.Parameter(weight.to(self.weight.dtype), requires_grad=True)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=True)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}"


def _targets(model: nn.Module, targets: Iterable[str]) -> Iterator[tuple[nn.Module, str]]:
    """(parent module, attribute) of every layer named by `targets`."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError(f"LoRA needs a GPT-like model with `blocks`, got {type(model).__name__}")
    for target in targets:
        if target == "lm_head":
            if not isinstance(getattr(model, "lm_head", None), nn.Linear):
                continue  # a reward model has no LM head
            if model.lm_head.weight is getattr(getattr(model, "wte", None), "weight", None):
                raise ConfigError("model.lora.targets: lm_head is tied to the token embeddings; leave it out")
            yield model, "lm_head"
            continue
        path, attribute = TARGETS[target]
        for block in blocks:
            yield getattr(block, path), attribute


def apply_lora(model: nn.Module, config: LoRAConfig | dict[str, Any], trainable: Iterable[str] = ()) -> nn.Module:
    """Wrap the target layers of `model` in place and freeze every parameter but the adapters and those whose
    names start with one of `trainable` (e.g. a reward model's `score_head`). Returns `model`."""
    config = LoRAConfig.from_dict(config)
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    for parent, attribute in _targets(model, config.targets):
        setattr(parent, attribute, LoRALinear(getattr(parent, attribute), config.r, config.alpha, config.dropout))
    prefixes = tuple(trainable)
    for name, p in model.named_parameters():
        if is_lora_key(name) or (prefixes and name.startswith(prefixes)):
            p.requires_grad_(True)
    return model


def is_lora_key(name: str) -> bool:
    return name.endswith((".lora_A", ".lora_B")) or name in ("lora_A", "lora_B")


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of `module` (keys ending in .lora_A / .lora_B)."""
    return {k: v for k, v in module.state_dict().items() if is_lora_key(k)}


def frozen_parameter_names(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put plain `nn.Linear`s back, in place; returns `model`, whose
    state dict then loads into an adapter-free model of the same class. Parameters are left trainable."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, attribute = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attribute, module.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict `merge_lora` would leave, without changing `model`: each adapted weight with its update
    folded in, no adapter tensors. A model without adapters gives its own state dict."""
    state = {k: v for k, v in model.state_dict().items() if not is_lora_key(k)}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                state[f"{name}.weight"] = (module.weight.detach().float() + module.delta_weight()).to(module.weight.dtype)
    return state


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every LoRA layer of `model` computes its base output only (the model before tuning)."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    states = [m.adapter_enabled for m in layers]
    for m in layers:
        m.adapter_enabled = False
    try:
        yield model
    finally:
        for m, state in zip(layers, states):
            m.adapter_enabled = state


def state_fingerprint(state: dict[str, torch.Tensor]) -> float:
    """A cheap checksum of a model's weights (weighted sum of |x| in float64), to tell a LoRA checkpoint's base
    apart from a checkpoint that has changed since the adapters were trained."""
    keys = sorted(k for k, v in state.items() if v.is_floating_point())
    return float(sum(state[k].detach().double().abs().sum().item() * (1 + i / len(keys)) for i, k in enumerate(keys)))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied tensors counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
