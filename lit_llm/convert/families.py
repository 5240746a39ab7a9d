"""How each Hugging Face architecture maps onto lit_llm's `Config` and weight names.

Two layouts cover the supported families. The Llama layout (Llama, Mistral, Qwen2, SmolLM) keeps separate
q/k/v and gate/up projections, which lit_llm stores fused (`attn.qkv` rows = q, k, v; `mlp.fc` rows = gate, up).
The GPT-2 layout stores its linear layers as `Conv1D`, the transpose of `nn.Linear`, with q/k/v already fused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lit_llm.errors import ConfigError
from lit_llm.model import Config

LLAMA_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED = (*LLAMA_TYPES, "gpt2")


@dataclass
class Part:
    """One lit_llm tensor built from one or more Hugging Face tensors (concatenated on dim 0), or transposed."""

    ours: str
    theirs: list[str]
    transpose: bool = False


def _rope_theta(hf: dict[str, Any], where: str) -> float:
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in (None, "default"):
        raise ConfigError(f"{where}: rope_type {kind!r} (rope scaling) is not supported; only plain RoPE is")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def config_from_hf(hf: dict[str, Any], where: str) -> Config:
    """lit_llm's Config for a Hugging Face config.json (`where` names the file in errors)."""
    kind = hf.get("model_type")
    if kind not in SUPPORTED:
        raise ConfigError(f"{where}: model_type {kind!r} is not supported (supported: {', '.join(SUPPORTED)})")
    if kind == "gpt2":
        activation = hf.get("activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ConfigError(f"{where}: activation_function {activation!r} is not supported")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                raise ConfigError(f"{where}: {flag}: true is not supported")
        n_embd = hf["n_embd"]
        return Config(
            name=f"hf-{kind}", block_size=hf["n_positions"], vocab_size=hf["vocab_size"], padding_multiple=1,
            n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=n_embd,
            intermediate_size=hf.get("n_inner") or 4 * n_embd,
            position="learned", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), mlp="gelu",
            gelu_approximate="none" if activation == "gelu" else "tanh", bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )  # fmt: skip
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act {hf.get('hidden_act')!r} is not supported (the Llama layout uses silu)")
    if hf.get("mlp_bias"):
        raise ConfigError(f"{where}: mlp_bias: true is not supported")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or n_embd // n_head
    if head_dim * n_head != n_embd:
        raise ConfigError(f"{where}: head_dim {head_dim} x num_attention_heads {n_head} != hidden_size {n_embd}")
    block_size = hf["max_position_embeddings"]
    window = hf.get("sliding_window") if hf.get("use_sliding_window", kind == "mistral") else None
    if window:  # attention within the window is exact; lit_llm has no sliding-window attention beyond it
        block_size = min(block_size, window)
    return Config(
        name=f"hf-{kind}", block_size=block_size, vocab_size=hf["vocab_size"], padding_multiple=1,
        n_layer=hf["num_hidden_layers"], n_head=n_head, n_query_groups=hf.get("num_key_value_heads") or n_head,
        n_embd=n_embd, intermediate_size=hf["intermediate_size"], position="rope", rope_base=_rope_theta(hf, where),
        norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu", bias=False,
        qkv_bias=bool(hf.get("attention_bias")) or kind == "qwen2", tie_embeddings=hf.get("tie_word_embeddings", False),
    )  # fmt: skip


def config_to_hf(config: Config, where: str) -> dict[str, Any]:
    """A Hugging Face config.json for a lit_llm Config; ConfigError when no supported family can hold it."""
    vocab = config.padded_vocab_size
    if config.smear:
        raise ConfigError(f"{where}: the token smear (smear: true) has no Hugging Face equivalent in GPT-2, Llama or "
                          "Qwen2; train without it to export")  # fmt: skip
    if config.position == "learned" and config.norm == "layernorm" and config.mlp == "gelu" and config.bias:
        if config.n_query_groups != config.n_head:
            raise ConfigError(f"{where}: GPT-2 has no grouped-query attention (n_query_groups {config.n_query_groups})")
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
            "n_positions": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
            "n_head": config.n_head, "n_inner": config.intermediate_size,
            "activation_function": "gelu_new" if config.gelu_approximate == "tanh" else "gelu",
            "layer_norm_epsilon": config.norm_eps, "tie_word_embeddings": config.tie_embeddings,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        }  # fmt: skip
    if config.position == "rope" and config.norm == "rmsnorm" and config.mlp == "swiglu" and not config.bias:
        kind = "qwen2" if config.qkv_bias else "llama"
        hf = {
            "architectures": ["Qwen2ForCausalLM" if config.qkv_bias else "LlamaForCausalLM"], "model_type": kind,
            "vocab_size": vocab, "hidden_size": config.n_embd, "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
            "num_key_value_heads": config.n_query_groups, "head_dim": config.head_size,
            "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
            "rope_theta": config.rope_base, "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
            "hidden_act": "silu", "tie_word_embeddings": config.tie_embeddings, "attention_dropout": 0.0,
        }  # fmt: skip
        if kind == "llama":
            hf.update(attention_bias=False, mlp_bias=False)
        return hf
    raise ConfigError(
        f"{where}: a model with position={config.position}, norm={config.norm}, mlp={config.mlp}, bias={config.bias} "
        "matches neither the Llama layout (rope, rmsnorm, swiglu, no bias) nor GPT-2's (learned, layernorm, gelu, bias)"
    )


def parts(config: Config, kind: str) -> list[Part]:
    """Every lit_llm tensor of a `kind` model and the Hugging Face tensors it is made of."""
    out: list[Part] = []
    if kind == "gpt2":
        out += [Part("wte.weight", ["transformer.wte.weight"]), Part("wpe.weight", ["transformer.wpe.weight"])]
        for i in range(config.n_layer):
            h = f"transformer.h.{i}."
            for ours, theirs in (("norm_1", "ln_1"), ("norm_2", "ln_2")):
                out += [Part(f"blocks.{i}.{ours}.{p}", [f"{h}{theirs}.{p}"]) for p in ("weight", "bias")]
            for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                                 ("mlp.proj", "mlp.c_proj")):  # fmt: skip
                out.append(Part(f"blocks.{i}.{ours}.weight", [f"{h}{theirs}.weight"], transpose=True))
                out.append(Part(f"blocks.{i}.{ours}.bias", [f"{h}{theirs}.bias"]))
        out += [Part(f"norm_f.{p}", [f"transformer.ln_f.{p}"]) for p in ("weight", "bias")]
    else:
        out.append(Part("wte.weight", ["model.embed_tokens.weight"]))
        for i in range(config.n_layer):
            h = f"model.layers.{i}."
            qkv = [f"{h}self_attn.{p}_proj" for p in "qkv"]
            out.append(Part(f"blocks.{i}.attn.qkv.weight", [f"{name}.weight" for name in qkv]))
            if config.qkv_bias:
                out.append(Part(f"blocks.{i}.attn.qkv.bias", [f"{name}.bias" for name in qkv]))
            out += [
                Part(f"blocks.{i}.attn.proj.weight", [f"{h}self_attn.o_proj.weight"]),
                Part(f"blocks.{i}.mlp.fc.weight", [f"{h}mlp.gate_proj.weight", f"{h}mlp.up_proj.weight"]),
                Part(f"blocks.{i}.mlp.proj.weight", [f"{h}mlp.down_proj.weight"]),
                Part(f"blocks.{i}.norm_1.weight", [f"{h}input_layernorm.weight"]),
                Part(f"blocks.{i}.norm_2.weight", [f"{h}post_attention_layernorm.weight"]),
            ]
        out.append(Part("norm_f.weight", ["model.norm.weight"]))
    if not config.tie_embeddings:
        out.append(Part("lm_head.weight", ["lm_head.weight"]))
    return out
