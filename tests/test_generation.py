"""Sampling: top-k / top-p filtering, temperature, seeds, stop tokens, padded vocabulary."""

from __future__ import annotations

import math

import pytest
import torch

from lit_llm.errors import ConfigError
from lit_llm.generation import filter_logits, sample_next
from lit_llm.model import GPT, Config

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(n_layer=2, n_head=4, n_embd=32, intermediate_size=64, block_size=64)
NEG_INF = float("-inf")


def tiny_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config.from_name("tiny", **{**SMALL, **overrides})).eval()


def kept(logits: torch.Tensor) -> list:
    """Indices (per row) that survived filtering."""
    return [torch.nonzero(row != NEG_INF).flatten().tolist() for row in logits.reshape(-1, logits.size(-1))]


# ---- filter_logits --------------------------------------------------------------------------------


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5, 2.5], [5.0, -1.0, 0.0, 4.0, 6.0]])
    out = filter_logits(logits, top_k=2)
    assert kept(out) == [[1, 4], [0, 4]]
    # Survivors keep their values unchanged.
    assert out[0, 1].item() == 3.0 and out[0, 4].item() == 2.5
    assert kept(filter_logits(logits, top_k=1)) == [[1], [4]]
    assert kept(filter_logits(logits, top_k=4)) == [[0, 1, 2, 4], [0, 2, 3, 4]]


def test_top_k_noop_cases_and_ties():
    logits = torch.tensor([1.0, 2.0, 2.0, 0.0])
    assert kept(filter_logits(logits, top_k=None)) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, top_k=4)) == [[0, 1, 2, 3]]
    assert kept(filter_logits(logits, top_k=10)) == [[0, 1, 2, 3]]
    # Ties with the k-th value are kept.
    assert kept(filter_logits(logits, top_k=1)) == [[1, 2]]


@pytest.mark.parametrize(
    "top_p, expected",
    [(0.5, [0]), (0.6, [0, 1]), (0.8, [0, 1]), (0.85, [0, 1, 2]), (0.95, [0, 1, 2]), (0.99, [0, 1, 2, 3])],
)
def test_top_p_keeps_smallest_nucleus(top_p, expected):
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert kept(filter_logits(logits, top_p=top_p)) == [expected]


def test_top_p_on_unsorted_rows_maps_back_to_the_right_ids():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3], [0.05, 0.15, 0.3, 0.5]])
    assert kept(filter_logits(probs.log(), top_p=0.8)) == [[1, 3], [2, 3]]
    assert kept(filter_logits(probs.log(), top_p=0.5)) == [[1], [3]]


def test_top_p_tiny_always_keeps_the_top_token():
    logits = torch.tensor([0.1, 2.0, 0.3])
    assert kept(filter_logits(logits, top_p=1e-6)) == [[1]]


def test_top_k_and_top_p_combine():
    # After top_k=3 the renormalized probabilities are 0.5/0.95, 0.3/0.95, 0.15/0.95.
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    # Mass before id 2 is 0.8/0.95 = 0.842 after top-k, but 0.8 without it.
    assert kept(filter_logits(logits, top_k=3, top_p=0.83)) == [[0, 1]]
    assert kept(filter_logits(logits, top_p=0.83)) == [[0, 1, 2]]
    assert kept(filter_logits(logits, top_k=3, top_p=0.99)) == [[0, 1, 2]]


# ---- temperature and seeds ------------------------------------------------------------------------


def test_temperature_zero_is_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 50, generator=g)
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(-1))
    # Greedy ignores filtering and the generator entirely.
    assert torch.equal(sample_next(logits, temperature=0.0, top_k=1, generator=g), logits.argmax(-1))


def test_sampling_follows_the_filtered_distribution():
    g = torch.Generator().manual_seed(0)
    # Only ids 2 and 3 survive top_k=2.
    logits = torch.tensor([0.0, 1.0, 3.0, 3.0]).expand(4000, 4)
    samples = sample_next(logits, temperature=1.0, top_k=2, generator=g)
    counts = torch.bincount(samples, minlength=4)
    assert counts[0] == 0 and counts[1] == 0
    assert abs(counts[2].item() - 2000) < 200  # equal logits -> about half each


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([math.log(0.7), math.log(0.3)]).expand(4000, 2)
    g = torch.Generator().manual_seed(1)
    cold = sample_next(logits, temperature=0.25, generator=g).float().mean().item()  # P(1) = .3^4/(.7^4+.3^4)
    hot = sample_next(logits, temperature=4.0, generator=g).float().mean().item()
    assert cold == pytest.approx(0.3**4 / (0.7**4 + 0.3**4), abs=0.02)
    assert hot == pytest.approx(0.3**0.25 / (0.7**0.25 + 0.3**0.25), abs=0.03)


def test_same_seed_same_samples_different_seed_different_samples():
    model = tiny_model()
    prompts = [[1, 2, 3], [4, 5]]
    a = model.generate(prompts, max_new_tokens=16, temperature=1.0, seed=123)
    torch.manual_seed(999)  # the global RNG must not matter when a seed is given
    b = model.generate(prompts, max_new_tokens=16, temperature=1.0, seed=123)
    c = model.generate(prompts, max_new_tokens=16, temperature=1.0, seed=124)
    assert a == b
    assert a != c
    assert all(len(r) == 16 for r in a + c)
    assert all(0 <= t < model.config.vocab_size for r in a + c for t in r)


def test_row_generators_sample_the_filtered_distribution():
    """Inverse-CDF sampling with one generator per row draws from the same distribution as multinomial."""
    logits = torch.tensor([0.0, 1.0, 3.0, 3.0]).expand(4000, 4)
    generators = [torch.Generator().manual_seed(i) for i in range(4000)]
    samples = sample_next(logits, temperature=1.0, top_k=2, row_generators=generators)
    counts = torch.bincount(samples, minlength=4)
    assert counts[0] == 0 and counts[1] == 0
    assert abs(counts[2].item() - 2000) < 200
    probs = torch.tensor([math.log(0.7), math.log(0.2), math.log(0.1)]).expand(6000, 3)
    draws = sample_next(probs, 1.0, row_generators=[torch.Generator().manual_seed(i) for i in range(6000)])
    shares = torch.bincount(draws, minlength=3).float() / 6000
    torch.testing.assert_close(shares, torch.tensor([0.7, 0.2, 0.1]), atol=0.02, rtol=0)


def test_row_seeds_make_a_rows_answer_independent_of_its_batch():
    """With row_seeds a prompt's sample depends only on its seed: alone, in another batch, or in another position
    it is the same; a different seed gives a different sample."""
    from lit_llm.generation import generate

    model = tiny_model()
    options = dict(max_new_tokens=12, temperature=1.0)
    both = generate(model, [[1, 2, 3], [4, 5]], row_seeds=[7, 8], **options)
    alone = generate(model, [[4, 5]], row_seeds=[8], **options)
    swapped = generate(model, [[4, 5], [9, 9, 9, 9], [1, 2, 3]], row_seeds=[8, 1, 7], **options)
    assert both[1] == alone[0] == swapped[0] and both[0] == swapped[2]
    assert generate(model, [[4, 5]], row_seeds=[9], **options)[0] != alone[0]
    with pytest.raises(ConfigError, match="row_seeds has 1 seeds for 2 prompts"):
        generate(model, [[1], [2]], row_seeds=[1], **options)


# ---- stop tokens ----------------------------------------------------------------------------------


def test_stop_token_ends_only_its_row_and_is_included():
    model = tiny_model(seed=2, init_std=0.5)
    prompts = [[10, 20, 30], [7, 8]]
    n = 12
    free = [model.generate([p], max_new_tokens=n, temperature=0.0)[0] for p in prompts]
    # A stop token that row 0 emits part-way through and row 1 never emits.
    j, stop = next((j, t) for j, t in enumerate(free[0][1:-1], start=1) if t not in free[1] and t not in free[0][:j])
    out = model.generate(prompts, max_new_tokens=n, temperature=0.0, stop_tokens=[stop])
    assert out[0] == free[0][: j + 1]
    assert out[0][-1] == stop
    assert out[1] == free[1]  # the other row keeps generating to max_new_tokens


def test_generation_stops_early_when_every_row_has_stopped():
    model = tiny_model(seed=2, init_std=0.5)
    prompts = [[10, 20, 30], [7, 8]]
    free = [model.generate([p], max_new_tokens=12, temperature=0.0)[0] for p in prompts]
    stops = [free[0][2], free[1][1]]
    out = model.generate(prompts, max_new_tokens=12, temperature=0.0, stop_tokens=stops)
    for row, f in zip(out, free):
        first = min(i for i, t in enumerate(f) if t in stops)
        assert row == f[: first + 1]
        assert row[-1] in stops


# ---- padded vocabulary ----------------------------------------------------------------------------


def test_padded_vocab_ids_are_never_sampled():
    model = tiny_model(vocab_size=70, padding_multiple=64)
    cfg = model.config
    assert cfg.padded_vocab_size == 128 > cfg.vocab_size
    # Make the padding columns overwhelmingly likely, so only the masking can keep them out.
    boost = torch.zeros(cfg.padded_vocab_size)
    boost[cfg.vocab_size :] = 30.0
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + boost)
    with torch.no_grad():
        assert int(model(torch.tensor([[1, 2, 3]]))[0, -1].argmax()) >= cfg.vocab_size  # control
    prompts = [[1, 2, 3], [4], [5, 6]]
    for kwargs in (dict(temperature=1.0), dict(temperature=0.0), dict(temperature=1.5, top_k=5, top_p=0.9)):
        out = model.generate(prompts, max_new_tokens=20, seed=0, **kwargs)
        assert all(len(r) == 20 for r in out)
        assert max(t for r in out for t in r) < cfg.vocab_size, kwargs


# ---- generate() bookkeeping and edge cases --------------------------------------------------------


def test_generate_restores_training_mode_and_frees_the_cache():
    model = tiny_model(dropout=0.5).train()
    a = model.generate([[1, 2, 3]], max_new_tokens=6, temperature=0.0)
    b = model.generate([[1, 2, 3]], max_new_tokens=6, temperature=0.0)
    assert a == b  # dropout is off while generating
    assert model.training
    assert all(block.attn.kv_cache is None for block in model.blocks)


def test_one_dimensional_prompt_tensor():
    model = tiny_model(seed=2, init_std=0.5)
    expected = model.generate([[5, 6, 7]], max_new_tokens=5, temperature=0.0)
    assert model.generate(torch.tensor([5, 6, 7]), max_new_tokens=5, temperature=0.0) == expected


def test_one_dimensional_prompt_tensor_with_attention_mask():
    model = tiny_model(seed=2, init_std=0.5)
    expected = model.generate([[5, 6, 7]], max_new_tokens=5, temperature=0.0)
    got = model.generate(
        torch.tensor([0, 5, 6, 7]), attention_mask=torch.tensor([0, 1, 1, 1]), max_new_tokens=5, temperature=0.0
    )
    assert got == expected


def test_top_p_zero_keeps_the_top_token():
    logits = torch.tensor([[0.1, 2.0, 0.3]])
    assert kept(filter_logits(logits, top_p=0.0)) == [[1]]
    assert sample_next(logits, temperature=1.0, top_p=0.0).tolist() == [1]


@pytest.mark.parametrize(
    "option, message",
    [
        (dict(max_new_tokens=0), "max_new_tokens must be at least 1, got 0"),
        (dict(max_new_tokens=-5), "max_new_tokens must be at least 1, got -5"),
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be at least 1"),
        (dict(top_p=0.0), "top_p must be in (0, 1]"),
        (dict(top_p=1.5), "top_p must be in (0, 1]"),
    ],
)
def test_impossible_sampling_options_are_one_config_error(option, message):
    model = tiny_model()
    with pytest.raises(ConfigError) as exc:
        model.generate([[1, 2], [3]], **{"max_new_tokens": 4, **option})
    assert message in str(exc.value)
