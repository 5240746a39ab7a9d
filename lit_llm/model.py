"""A decoder-only transformer in one file: `Config` (a dataclass with named presets) and `GPT`.

The model knows nothing about Lightning, data or losses. One set of flags covers the two families
people bring weights from: Llama-style (RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases)
and GPT-2-style (learned positions, LayerNorm, GELU, biases, tied embeddings).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_llm.errors import CheckpointError, ConfigError, from_known_keys


@dataclass
class Config:
    """Shape and flavour of a GPT. Build one with `Config.from_name("tiny", n_layer=2)`."""

    name: str = ""
    block_size: int = 256
    vocab_size: int = 4096
    # The embedding and LM head are padded to a multiple of this for faster matmuls; logits past
    # `vocab_size` are never sampled.
    padding_multiple: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    # Grouped-query attention: number of key/value heads (n_head = multi-head, 1 = multi-query).
    n_query_groups: int | None = None
    intermediate_size: int | None = None
    position: Literal["rope", "learned"] = "rope"
    rope_base: float = 10000.0
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    gelu_approximate: Literal["none", "tanh"] = "none"
    bias: bool = False
    qkv_bias: bool = False  # a bias on the query/key/value projection even when `bias` is off (Qwen2)
    tie_embeddings: bool = False
    # Token smear (modded-nanogpt): each position's embedding adds a gated share of the previous token's, so one
    # attention layer can match "the token after X" (an induction head) without first building it from two.
    smear: bool = False
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_query_groups is None:
            self.n_query_groups = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if self.n_embd % self.n_head:
            raise ConfigError(f"model config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_query_groups:
            raise ConfigError(
                f"model config: n_head ({self.n_head}) must be divisible by n_query_groups ({self.n_query_groups})"
            )
        if self.position == "rope" and self.head_size % 2:
            raise ConfigError(f"model config: RoPE needs an even head size, got {self.head_size}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        m = max(1, self.padding_multiple)
        return ((self.vocab_size + m - 1) // m) * m

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Config:
        """A named preset with some fields replaced; unknown names and keys are rejected by name."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return cls.from_dict({**PRESETS[name], "name": name}, **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> Config:
        return from_known_keys(cls, {**values, **overrides}, "model config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Config:
        return replace(self, **changes)


_GPT2 = dict(position="learned", norm="layernorm", mlp="gelu", gelu_approximate="tanh", bias=True, tie_embeddings=True)
_LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False, vocab_size=32000)

PRESETS: dict[str, dict[str, Any]] = {
    # Trains in about a minute on a laptop CPU.
    "tiny": dict(block_size=128, vocab_size=2048, n_layer=4, n_head=4, n_embd=128, intermediate_size=384),
    # nanoGPT's Shakespeare-char "baby GPT" at the width of its CPU example.
    "baby-gpt": dict(_GPT2, block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, tie_embeddings=True),
    "gpt2-124m": dict(_GPT2, block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
    "gpt2-350m": dict(_GPT2, block_size=1024, vocab_size=50257, n_layer=24, n_head=16, n_embd=1024),
    "llama-125m": dict(
        _LLAMA, block_size=2048, n_layer=12, n_head=12, n_query_groups=4, n_embd=768, intermediate_size=2048
    ),
    "llama-350m": dict(
        _LLAMA, block_size=2048, n_layer=24, n_head=16, n_query_groups=8, n_embd=1024, intermediate_size=2816
    ),
    # TinyLlama-1.1B's shape.
    "llama-1b": dict(
        _LLAMA, block_size=2048, n_layer=22, n_head=32, n_query_groups=4, n_embd=2048, intermediate_size=5632
    ),
}


def packed_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, T) boolean mask for packed sequences: causal, and only within a query's own segment, so the
    examples packed into one row never attend to each other. Give each example (and the padding) its own id."""
    T = segment_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    return causal & (segment_ids[:, :, None] == segment_ids[:, None, :])


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalize in fp32 so bf16 training keeps the reduction accurate.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def _norm(config: Config) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rope_cache(length: int, head_size: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """(length, head_size) cos and sin tables stacked on a leading dim of 2, in the rotate-half layout."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.stack([angles.cos(), angles.sin()])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class KVCache(nn.Module):
    """Keys and values of every past position, preallocated for one generation call."""

    def __init__(self, batch: int, groups: int, length: int, head_size: int, device, dtype) -> None:
        super().__init__()
        shape = (batch, groups, length, head_size)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.size(2)
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        hs, groups = config.head_size, config.n_query_groups
        self.qkv = nn.Linear(config.n_embd, (config.n_head + 2 * groups) * hs, bias=config.bias or config.qkv_bias)
        self.proj = nn.Linear(config.n_head * hs, config.n_embd, bias=config.bias)
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
        cache_start: int | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        cfg = self.config
        hs, nh, ng = cfg.head_size, cfg.n_head, cfg.n_query_groups
        q, k, v = self.qkv(x).split([nh * hs, ng * hs, ng * hs], dim=-1)
        q = q.view(B, T, nh, hs).transpose(1, 2)
        k = k.view(B, T, ng, hs).transpose(1, 2)
        v = v.view(B, T, ng, hs).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache_start is not None:
            if self.kv_cache is None:
                raise RuntimeError("call GPT.setup_kv_cache() before decoding with a cache")
            k, v = self.kv_cache.update(cache_start, k, v)
        dropout = cfg.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, enable_gqa=ng != nh
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, nh * hs))


class MLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        hidden = config.intermediate_size
        self.fc = nn.Linear(config.n_embd, (2 if self.swiglu else 1) * hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate=self.approximate)
        return self.proj(h)


class Block(nn.Module):
    """One pre-norm transformer layer; the unit FSDP wraps and activation checkpointing recomputes."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.norm_1 = _norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = _norm(config)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, rope, mask, cache_start):
        x = x + self.drop(self.attn(self.norm_1(x), rope, mask, cache_start))
        return x + self.drop(self.mlp(self.norm_2(x)))


class GPT(nn.Module):
    def __init__(self, config: Config, wrap: Callable[[nn.Module], nn.Module] | None = None) -> None:
        """`wrap`, when given, is applied to each Block right after it is built and initialized (FSDP
        shards it there), so the whole model never exists unsharded on one device."""
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self._init_params(self)
        blocks = []
        for _ in range(config.n_layer):
            block = Block(config)
            self._init_params(block)
            blocks.append(wrap(block) if wrap is not None else block)
        self.blocks = nn.ModuleList(blocks)
        self.norm_f = _norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self._init_params(self.norm_f)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        else:
            self._init_params(self.lm_head)
        # Registered after every other parameter, so a model without it is initialized exactly as before.
        self.smear_gate = nn.Linear(config.n_embd, 1) if config.smear else None
        if self.smear_gate is not None:
            self._init_smear()
        self._smear_prev: torch.Tensor | None = None  # the last token's embedding while decoding with a cache
        if config.position == "rope":
            self.register_buffer(
                "rope", rope_cache(config.block_size, config.head_size, config.rope_base), persistent=False
            )
        else:
            self.rope = None

    def _init_params(self, module: nn.Module) -> None:
        """GPT-2 initialization: N(0, 0.02), residual projections scaled down by depth, norms 1, biases 0.

        Applied module by module in registration order, so building with or without `wrap` draws the
        same random numbers and gives the same weights. Blocks are skipped when `module` is the GPT.
        """
        std = self.config.init_std
        for name, p in module.named_parameters():
            if module is self and name.startswith("blocks."):
                continue
            if p.dim() < 2:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, mean=0.0, std=std)

    def _init_smear(self) -> None:
        nn.init.zeros_(self.smear_gate.weight)  # the gate starts at sigmoid(0) = 0.5 for every token
        nn.init.zeros_(self.smear_gate.bias)

    def _smear(self, x: torch.Tensor, position_ids: torch.Tensor, cache_start: int | None) -> torch.Tensor:
        """x_t + sigmoid(gate(x_t)) * x_{t-1}; nothing is added at position 0 (a sequence's, a packed example's
        or a left-padded row's first token, and its padding). Decoding with a cache, the previous token of the
        first query is the last one of the call before."""
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        if cache_start and self._smear_prev is not None:
            prev[:, :1] = self._smear_prev
        if cache_start is not None:
            self._smear_prev = x[:, -1:].detach()
        prev = prev * (position_ids > 0).unsqueeze(-1).to(x.dtype)
        return x + torch.sigmoid(self.smear_gate(x)) * prev

    def reset_parameters(self) -> None:
        self._init_params(self.wte)
        if self.wpe is not None:
            self._init_params(self.wpe)
        for block in self.blocks:
            self._init_params(block)
        self._init_params(self.norm_f)
        if not self.config.tie_embeddings:
            self._init_params(self.lm_head)
        if self.smear_gate is not None:
            self._init_smear()
        if self.rope is not None and self.rope.device.type != "meta":
            cfg = self.config
            self.rope = rope_cache(cfg.block_size, cfg.head_size, cfg.rope_base, device=self.rope.device)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel() if not self.config.tie_embeddings else 0
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
        return n

    def backbone(
        self,
        idx: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache_start: int | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, n_embd), normalized, without the LM head.

        `position_ids` (B, T) default to 0..T-1. `attention_mask` is a boolean (B, T_q, T_k) mask of
        allowed keys (True = attend); None means plain causal attention over `idx`. With
        `cache_start`, keys and values are written to the KV cache at that offset and attention
        runs over everything cached so far.
        """
        B, T = idx.shape
        if position_ids is None:
            start = cache_start or 0
            if start + T > self.config.block_size:
                raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
            position_ids = torch.arange(start, start + T, device=idx.device).expand(B, T)
        x = self.wte(idx)
        if self.smear_gate is not None:
            x = self._smear(x, position_ids, cache_start)
        if self.wpe is not None:
            x = x + self.wpe(position_ids)
        x = self.drop(x)
        rope = None
        if self.rope is not None:
            cos, sin = self.rope[0][position_ids], self.rope[1][position_ids]
            rope = (cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype))
        if attention_mask is None and cache_start:
            # SDPA's is_causal aligns the mask top-left, wrong when cached keys precede the queries.
            keys = torch.arange(cache_start + T, device=idx.device)
            queries = torch.arange(cache_start, cache_start + T, device=idx.device)
            attention_mask = (keys[None, :] <= queries[:, None]).expand(B, T, -1)
        mask = attention_mask.unsqueeze(1) if attention_mask is not None else None
        for block in self.blocks:
            x = block(x, rope, mask, cache_start)
        return self.norm_f(x)

    def forward(self, idx: torch.Tensor, from_position: int = 0, hidden: bool = False, **kwargs: Any) -> Any:
        """Logits (B, T, padded_vocab_size); keyword arguments as in `backbone`. With `from_position` only the
        positions from there on; with `hidden`, (logits, the hidden states they come from). Whatever reads the
        model goes through here, so an FSDP root gathers its own weights (embeddings, head) for it."""
        states = self.backbone(idx, **kwargs)
        if from_position:
            states = states[:, from_position:]
        logits = self.lm_head(states)
        return (logits, states) if hidden else logits

    # ---- incremental decoding -------------------------------------------------------------------

    def setup_kv_cache(self, batch_size: int, max_length: int, device=None, dtype=None) -> None:
        p = self.wte.weight
        device, dtype = device or p.device, dtype or p.dtype
        for block in self.blocks:
            cfg = self.config
            block.attn.kv_cache = KVCache(batch_size, cfg.n_query_groups, max_length, cfg.head_size, device, dtype)
        self._smear_prev = None

    def clear_kv_cache(self) -> None:
        self._smear_prev = None
        for block in self.blocks:
            block.attn.kv_cache = None

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]] | torch.Tensor, **kwargs: Any) -> list[list[int]]:
        """Sample continuations for a batch of prompts; see `lit_llm.generation.generate`."""
        from lit_llm.generation import generate

        return generate(self, prompts, **kwargs)


class RewardModel(GPT):
    """A GPT whose LM head is replaced by a scalar head: a sequence's reward is the head's value at its last token.

    Built from a language model's weights (`load_language_model`), it starts with that model's understanding of
    text; only `score_head` is new. Without an LM head, no parameter sits unused under DDP.
    """

    heads = ("score_head",)  # what is new beside the backbone, and stays trainable under LoRA

    def __init__(self, config: Config, wrap: Callable[[nn.Module], nn.Module] | None = None) -> None:
        super().__init__(config, wrap=wrap)
        del self.lm_head
        self.score_head = nn.Linear(config.n_embd, 1, bias=False)
        nn.init.normal_(self.score_head.weight, mean=0.0, std=1.0 / math.sqrt(config.n_embd + 1))

    def forward(self, idx: torch.Tensor, last_index: torch.Tensor | None = None, every_position: bool = False,
                **kwargs: Any) -> torch.Tensor:
        """(B,) rewards: the head at `last_index` (B,) of each row, the last real token (default: the last column);
        with `every_position`, `values`."""
        if every_position:
            return self.values(idx, **kwargs)
        hidden = self.backbone(idx, **kwargs)
        if last_index is None:
            last = hidden[:, -1]
        else:
            last = hidden[torch.arange(idx.size(0), device=idx.device), last_index]
        return self.score_head(last).squeeze(-1).float()

    def values(self, idx: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """(B, T) the head at every position: a critic's value estimate after each token. Under FSDP call the
        wrapped model with `every_position=True` instead, so its root gathers its weights."""
        return self.score_head(self.backbone(idx, **kwargs)).squeeze(-1).float()

    def load_language_model(self, state_dict: dict[str, torch.Tensor], source: Any = "checkpoint") -> list[str]:
        """Load a GPT's weights (its LM head is dropped) or a reward model's; returns the keys left at their init.
        Weights that do not fit raise a CheckpointError naming `source`."""
        state = {k: v for k, v in state_dict.items() if not k.startswith("lm_head.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {f"{head}.weight" for head in self.heads}:
            raise CheckpointError(
                f"{source}: weights do not match the model (missing: {missing[:5]}, unexpected: {unexpected[:5]})"
            )
        return list(missing)
