"""The one sampler RL, evaluation, pairs and compare share: it answers exactly as the generation functions do."""

from __future__ import annotations

import pytest

from lit_llm.checkpoint import load_bundle
from lit_llm.generation import generate_responses
from lit_llm.rollout.sampler import RolloutSampler
from lit_llm.text.templates import load_style, stop_ids
from tests.stages.conftest import base_checkpoint  # noqa: F401

CONVERSATIONS = [[{"role": "user", "content": q}] for q in ("What is 2 + 3?", "Sort from smallest to largest: 3 1 2")]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_answers_equal_generate_responses_with_the_same_seed(base_checkpoint, temperature):  # noqa: F811
    bundle = load_bundle(base_checkpoint)
    style = load_style("qa")
    sampler = RolloutSampler.for_style(bundle.tokenizer, style, max_new_tokens=6, temperature=temperature)
    assert sampler.stop_tokens == stop_ids(bundle.tokenizer, style)
    expected = generate_responses(bundle.model, bundle.tokenizer, style, CONVERSATIONS, max_new_tokens=6,
                                  temperature=temperature, seed=7)  # fmt: skip
    assert sampler.answer(bundle.model, CONVERSATIONS, style, seed=7) == expected


def test_without_a_style_it_stops_at_eos_and_sample_lays_out_the_batch(base_checkpoint):  # noqa: F811
    bundle = load_bundle(base_checkpoint)
    sampler = RolloutSampler.for_style(bundle.tokenizer, None, max_new_tokens=5, temperature=1.0)
    assert sampler.stop_tokens == [bundle.tokenizer.eos_id]
    prompts = [bundle.tokenizer.encode("Once upon a time"), bundle.tokenizer.encode("The owl")]
    layout, responses = sampler.sample(bundle.model, prompts, seed=3, device="cpu")
    P = layout["P"]
    assert P == max(map(len, prompts)) and layout["ids"].shape == (2, P + max(map(len, responses)))
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        assert layout["ids"][row, P - len(prompt) : P].tolist() == prompt
        assert layout["ids"][row, P : P + len(response)].tolist() == response
        assert bool(layout["ended"][row]) == (bool(response) and response[-1] == bundle.tokenizer.eos_id)
    assert sampler.generate(bundle.model, prompts, seed=3) == responses  # the same seed, the same answers
