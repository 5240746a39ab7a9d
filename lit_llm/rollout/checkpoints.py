"""Sampling from a checkpoint file: what `lit-llm generate` and notebooks call."""

from __future__ import annotations

import torch

from lit_llm.checkpoint import load_bundle
from lit_llm.errors import ConfigError
from lit_llm.generation import check_sampling, generate_responses, generate_text


def generate_from_checkpoint(checkpoint: str, prompt: str, **kwargs) -> list[str]:
    """Samples for `prompt` from a checkpoint. One trained with a prompt style (SFT and later stages) answers
    `prompt` as a user message in that style, stopping at its stop tokens; otherwise, or with `raw=True`, the
    text is continued as is up to EOS. Keyword arguments as in `sample_checkpoint`."""
    return sample_checkpoint(checkpoint, prompt, **kwargs)[0]


def sample_checkpoint(
    checkpoint: str,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int | None = 1337,
    device: str = "auto",
    raw: bool = False,
) -> tuple[list[str], bool]:
    """Samples for `prompt` from a lit_llm checkpoint, and whether they are replies in the checkpoint's prompt style
    (`lit-llm generate` prints them). A checkpoint trained with a prompt style (SFT and later stages) answers the
    prompt as a user message in that style; otherwise, or with `raw`, the text is continued as it is.

    Args:
        checkpoint: a .ckpt file, or a run folder holding checkpoints/last.ckpt.
        prompt: text to continue (a prompt longer than the context is cut from the left, with a warning).
        max_new_tokens: tokens to generate per sample (at least 1, and fewer than the model's block_size).
        temperature: sampling temperature (>= 0); 0 is greedy.
        top_k: sample among the k most likely tokens (None = all).
        top_p: nucleus sampling mass, in (0, 1].
        num_samples: independent samples (at least 1).
        seed: random seed of the sampler.
        device: "auto", "cpu" or "cuda".
        raw: continue the prompt as plain text even when the checkpoint has a prompt style.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)  # before loading: a bad option fails at once
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    bundle = load_bundle(checkpoint)
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    model = bundle.model.to(device)
    if bundle.prompt_style is not None and not raw:
        conversation = [{"role": "user", "content": prompt}]
        replies = generate_responses(model, bundle.tokenizer, bundle.prompt_style, [conversation] * num_samples,
                                     **sampling)  # fmt: skip
        return replies, True
    return generate_text(model, bundle.tokenizer, [prompt] * num_samples, **sampling), False
