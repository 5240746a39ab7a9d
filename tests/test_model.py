"""GPT and Config: causal masking, KV-cache decoding, batched generation, presets, config errors."""

from __future__ import annotations

import math

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.model import GPT, Config

pytestmark = pytest.mark.usefixtures("one_thread")

# Small shapes so every test runs in well under a second on CPU.
SMALL = dict(n_layer=2, n_head=4, n_embd=32, intermediate_size=64, block_size=48)

VARIANTS = {
    "tiny": dict(name="tiny", **SMALL),
    "baby-gpt": dict(name="baby-gpt", **SMALL),
    "tiny-gqa2": dict(name="tiny", n_query_groups=2, **SMALL),
    "tiny-mqa1": dict(name="tiny", n_query_groups=1, **SMALL),
    "tiny-smear": dict(name="tiny", smear=True, **SMALL),
}


def build(variant: str, seed: int = 0, **overrides) -> GPT:
    spec = dict(VARIANTS[variant])
    name = spec.pop("name")
    spec.update(overrides)
    torch.manual_seed(seed)
    model = GPT(Config.from_name(name, **spec)).eval()
    if model.smear_gate is not None:  # a gate that differs from token to token, as after training
        torch.nn.init.normal_(model.smear_gate.weight, std=0.5)
    return model


def test_smear_adds_a_gated_share_of_the_previous_token_and_nothing_at_position_zero():
    model = build("tiny-smear")
    idx = torch.tensor([[5, 9, 3, 7]])
    x = model.wte(idx)
    gate = torch.sigmoid(model.smear_gate(x))
    expected = x.clone()
    expected[:, 1:] += gate[:, 1:] * x[:, :-1]
    got = model._smear(x, torch.arange(4)[None], None)
    torch.testing.assert_close(got, expected)
    # A packed row: the second example starts at position 0 and takes nothing from the first.
    packed = model._smear(x, torch.tensor([[0, 1, 0, 1]]), None)
    torch.testing.assert_close(packed[:, 2], x[:, 2])
    torch.testing.assert_close(packed[:, 3], x[:, 3] + gate[:, 3] * x[:, 2])
    plain = build("tiny")
    assert plain.smear_gate is None and not any("smear" in k for k in plain.state_dict())


def test_a_smear_model_has_no_hugging_face_family():
    from lit_llm.convert.families import config_to_hf

    with pytest.raises(ConfigError, match=r"run/last.ckpt: the token smear \(smear: true\) has no Hugging Face"):
        config_to_hf(Config.from_name("tiny", smear=True), "run/last.ckpt")


def test_variants_have_the_intended_attention_layout():
    # Guard that the parametrized variants really exercise MHA / GQA / MQA and both families.
    assert build("tiny").config.n_query_groups == 4
    assert build("tiny-gqa2").config.n_query_groups == 2
    assert build("tiny-mqa1").config.n_query_groups == 1
    gqa = build("tiny-gqa2")
    hs = gqa.config.head_size
    assert gqa.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * hs
    baby = build("baby-gpt")
    assert baby.wpe is not None and baby.rope is None and baby.config.norm == "layernorm"
    assert build("tiny").wpe is None and build("tiny").rope is not None


# ---- causal masking -------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_future_tokens_never_change_earlier_logits(variant):
    model = build(variant)
    V, T = model.config.vocab_size, 20
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (2, T), generator=g)
    with torch.no_grad():
        base = model(idx)
        for pos in (5, 12, T - 1):
            changed = idx.clone()
            changed[:, pos] = (changed[:, pos] + 1 + torch.randint(0, V - 1, (2,), generator=g)) % V
            assert not torch.equal(changed[:, pos], idx[:, pos])
            out = model(changed)
            torch.testing.assert_close(out[:, :pos], base[:, :pos], rtol=0, atol=1e-5)
            # The changed position itself must react, or the comparison above proves nothing.
            assert (out[:, pos] - base[:, pos]).abs().max() > 1e-4


# ---- KV-cache decoding ----------------------------------------------------------------------------


def greedy_by_recomputation(model: GPT, prompt: list[int], n: int) -> list[int]:
    seq = torch.tensor([prompt])
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(seq)[0, -1, : model.config.vocab_size]
            nxt = int(logits.argmax())
            out.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_greedy_equals_full_recomputation(variant):
    model = build(variant, seed=3, init_std=0.5)  # larger init: peaked, non-degenerate logits
    prompt = [5, 17, 3, 9, 30, 2]
    expected = greedy_by_recomputation(model, prompt, 12)
    got = model.generate([prompt], max_new_tokens=12, temperature=0.0)
    assert got == [expected]
    assert len(set(expected)) > 1  # not a trivially constant continuation


@pytest.mark.parametrize("variant", ["tiny-gqa2", "baby-gpt", "tiny-smear"])
def test_kv_cache_logits_match_full_forward_with_explicit_mask(variant):
    """The cached decode path as generate() drives it (explicit masks) reproduces the full logits."""
    model = build(variant, seed=4, init_std=0.3)  # sharp attention, so cache errors show
    B, T, P = 2, 10, 6
    seq = torch.randint(0, model.config.vocab_size, (B, T))
    with torch.no_grad():
        full = model(seq)
        model.setup_kv_cache(B, T)
        try:
            causal = torch.ones(P, P, dtype=torch.bool).tril().expand(B, P, P)
            parts = [model(seq[:, :P], attention_mask=causal, cache_start=0)]
            for t in range(P, T):
                allowed = torch.ones(B, 1, t + 1, dtype=torch.bool)
                parts.append(model(seq[:, t : t + 1], attention_mask=allowed, cache_start=t))
        finally:
            model.clear_kv_cache()
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


def test_kv_cache_logits_match_full_forward():
    """backbone's documented default: with cache_start and no mask, attend to everything cached so far."""
    model = build("tiny-gqa2", seed=4)
    seq = torch.randint(0, model.config.vocab_size, (2, 10))
    with torch.no_grad():
        full = model(seq)
        model.setup_kv_cache(2, 10)
        try:
            parts = [model(seq[:, :6], cache_start=0)]
            for t in range(6, 10):
                parts.append(model(seq[:, t : t + 1], cache_start=t))
        finally:
            model.clear_kv_cache()
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


# ---- batched generation with ragged prompts -------------------------------------------------------

PROMPTS = [[7, 3, 11, 2, 9, 4, 1], [12, 5], [8, 8, 1, 6]]


def alone(model: GPT, n: int = 8) -> list[list[int]]:
    return [model.generate([p], max_new_tokens=n, temperature=0.0)[0] for p in PROMPTS]


def padded(side: str, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in PROMPTS)
    idx = torch.full((len(PROMPTS), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(PROMPTS), T), dtype=torch.long)
    for i, p in enumerate(PROMPTS):
        sl = slice(0, len(p)) if side == "right" else slice(T - len(p), T)
        idx[i, sl] = torch.tensor(p)
        mask[i, sl] = 1
    return idx, mask


@pytest.mark.parametrize("variant", ["tiny", "baby-gpt", "tiny-gqa2", "tiny-smear"])
def test_batched_list_of_lists_equals_each_prompt_alone(variant):
    model = build(variant, seed=5, init_std=0.5)
    expected = alone(model)
    assert model.generate(PROMPTS, max_new_tokens=8, temperature=0.0) == expected
    # The prompts must actually lead to different continuations, or mixing rows would go unnoticed.
    assert len({tuple(r) for r in expected}) == len(PROMPTS)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("variant", ["tiny", "baby-gpt", "tiny-smear"])
def test_batched_padded_tensor_with_mask_equals_each_prompt_alone(variant, side):
    model = build(variant, seed=5, init_std=0.5)
    expected = alone(model)
    # Pad with a real token id so that ignoring the mask would change the answer.
    idx, mask = padded(side, pad_id=13)
    got = model.generate(idx, attention_mask=mask, max_new_tokens=8, temperature=0.0, pad_id=13)
    assert got == expected


def test_attention_mask_is_honoured():
    """Control for the padded tests: treating the padding as prompt tokens gives other answers."""
    model = build("tiny", seed=5, init_std=0.5)
    idx, _ = padded("left", pad_id=13)
    assert model.generate(idx, max_new_tokens=8, temperature=0.0) != alone(model)


# ---- backbone / forward ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["tiny", "baby-gpt"])
def test_backbone_shape_and_forward_is_lm_head_of_backbone(variant):
    model = build(variant)
    idx = torch.randint(0, model.config.vocab_size, (3, 11))
    with torch.no_grad():
        hidden = model.backbone(idx)
        logits = model(idx)
    assert hidden.shape == (3, 11, model.config.n_embd)
    assert logits.shape == (3, 11, model.config.padded_vocab_size)
    torch.testing.assert_close(logits, model.lm_head(hidden), rtol=0, atol=0)


# ---- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, nominal",
    [("gpt2-124m", 124e6), ("llama-125m", 125e6), ("llama-350m", 350e6), ("llama-1b", 1.1e9)],
)
def test_preset_parameter_counts(name, nominal):
    with torch.device("meta"):
        model = GPT(Config.from_name(name))
    n = model.num_parameters()
    assert abs(n - nominal) / nominal < 0.03, f"{name}: {n:,} parameters"


def test_gpt2_124m_exact_parameter_count():
    # HF GPT-2 has 124,439,808 parameters with vocab 50257; padding the vocab to 50304 adds 47 rows.
    with torch.device("meta"):
        model = GPT(Config.from_name("gpt2-124m"))
    assert model.num_parameters() == 124_439_808 + (50304 - 50257) * 768


def test_tied_embeddings_share_one_tensor():
    model = build("baby-gpt")
    assert model.config.tie_embeddings
    assert model.lm_head.weight is model.wte.weight
    with torch.no_grad():
        model.wte.weight[3, 0] = 123.0
    assert model.lm_head.weight[3, 0].item() == 123.0
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once
    untied = build("tiny")
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()


# ---- config errors --------------------------------------------------------------------------------


def test_unknown_preset_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match="no-such-model"):
        Config.from_name("no-such-model")


def test_unknown_key_raises_config_error_naming_it():
    with pytest.raises(ConfigError, match="n_layers"):
        Config.from_name("tiny", n_layers=2)
    with pytest.raises(ConfigError, match="hidden_dim"):
        Config.from_dict({"hidden_dim": 3})


def test_n_embd_not_divisible_by_n_head_raises():
    with pytest.raises(ConfigError, match=r"n_embd \(30\).*n_head \(4\)"):
        Config.from_name("tiny", n_embd=30, n_head=4)
    with pytest.raises(ConfigError):
        Config(n_embd=100, n_head=3)


def test_n_head_not_divisible_by_n_query_groups_raises():
    with pytest.raises(ConfigError, match=r"n_query_groups \(3\)"):
        Config.from_name("tiny", n_query_groups=3)


def test_generating_past_block_size_raises_value_error():
    model = build("tiny")  # block_size 48
    prompt = list(range(1, 41))
    with pytest.raises(ValueError, match="block_size"):
        model.generate([prompt], max_new_tokens=9, temperature=0.0)
    # Exactly filling the context is allowed.
    assert len(model.generate([prompt], max_new_tokens=8, temperature=0.0)[0]) == 8
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_wrap_hook_sees_each_block_and_keeps_the_initialization():
    cfg = Config.from_name("baby-gpt", **SMALL)
    seen = []

    def wrap(module):
        seen.append(module)
        return module

    torch.manual_seed(5)
    plain = GPT(cfg)
    torch.manual_seed(5)
    wrapped = GPT(cfg, wrap=wrap)
    assert len(seen) == cfg.n_layer and all(type(m).__name__ == "Block" for m in seen)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(wrapped.state_dict()[name], tensor), name
    # GPT-2 init: residual projections are scaled down by sqrt(2 * n_layer).
    proj_std = wrapped.blocks[0].mlp.proj.weight.std().item()
    assert proj_std == pytest.approx(cfg.init_std / math.sqrt(2 * cfg.n_layer), rel=0.15)
