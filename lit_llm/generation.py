"""Batched sampling with a KV cache: temperature, top-k, top-p, stop tokens, left or right padding.

Sampling options are checked in one place, `check_sampling`, which `generate` (and so every command that samples:
generate, chat, evaluate, compare, pairs) calls: an impossible value is one ConfigError naming the option.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from lit_llm.errors import ConfigError

# A model here is any network with GPT's interface (`lit_llm.model.GPT`: `config`, `init_cache`, a forward taking
# position_ids, attention_mask and a cache); this module imports none, so the model may call it.
GPT = torch.nn.Module

log = logging.getLogger(__name__)


def check_sampling(
    max_new_tokens: int = 1, temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0
) -> None:
    """Raise one ConfigError naming the first option no sampler can use: max_new_tokens < 1, temperature < 0,
    top_k < 1 (None means all tokens), top_p outside (0, 1]."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be at least 1, or None for all tokens, got {top_k}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest nucleus of mass >= top_p to -inf."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the top token always stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    row_generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """One token id per row of `logits` (B, V); temperature 0 is greedy. With `row_generators` (one per row) each
    row draws from its own stream, so a row's token does not depend on the other rows of the batch."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    if row_generators is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    # Inverse-CDF sampling with one uniform draw per row from that row's generator.
    u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in row_generators])
    cdf = probs.cumsum(-1)
    token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    # Float round-off may put u at the very end of the CDF: fall back to the last token of nonzero probability.
    last = (probs > 0).long().cumsum(-1).argmax(-1)
    return torch.minimum(token, last)


def _unpad(prompts: list[Sequence[int]] | torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
            if attention_mask is not None and attention_mask.dim() == 1:
                attention_mask = attention_mask.unsqueeze(0)
        if attention_mask is None:
            return prompts.tolist()
        return [row[m.bool()].tolist() for row, m in zip(prompts, attention_mask)]
    return [list(p) for p in prompts]


def padded_positions_and_mask(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (B, T) and a causal attention mask (B, T, T) for rows with padding anywhere, `valid` (B, T)
    marking real tokens: positions count real tokens only, and no query sees a padding key. Each query also sees
    itself, so rows of padding stay finite instead of NaN."""
    T = valid.size(1)
    position_ids = (valid.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    mask = causal & (valid[:, None, :] | torch.eye(T, dtype=torch.bool, device=valid.device))
    return position_ids, mask


@torch.inference_mode()
def generate(
    model: GPT,
    prompts: list[Sequence[int]] | torch.Tensor,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
    seed: int | None = None,
    attention_mask: torch.Tensor | None = None,
    pad_id: int = 0,
    row_seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """New tokens for each prompt (a stop token, when emitted, ends its row and is included).

    `seed` seeds one generator for the batch; `row_seeds` (one per prompt) seed a generator per row instead, so
    each row's sample depends only on its own seed and prompt, not on the batch it is generated in.

    `prompts` is a list of token-id lists of any lengths, or a (B, T) tensor; with a tensor, an
    `attention_mask` (1 = token, 0 = padding) may mark left or right padding. Rows are re-laid out
    left-padded, so every row's next token sits in the last column and decoding is one batched step.
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    rows = _unpad(prompts, attention_mask)
    if not rows or any(len(r) == 0 for r in rows):
        raise ConfigError("generate needs at least one non-empty prompt per row")
    cfg = model.config
    device = model.wte.weight.device
    B, T = len(rows), max(len(r) for r in rows)
    total = T + max_new_tokens
    if total > cfg.block_size:
        raise ConfigError(
            f"prompt of {T} tokens + max_new_tokens {max_new_tokens} exceeds the model's block_size {cfg.block_size}"
        )
    generator = row_generators = None
    if row_seeds is not None:
        if len(row_seeds) != B:
            raise ConfigError(f"row_seeds has {len(row_seeds)} seeds for {B} prompts")
        row_generators = [torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
    elif seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    idx = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    key_valid = torch.zeros((B, total), dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        idx[i, T - len(r) :] = torch.tensor(r, dtype=torch.long, device=device)
        key_valid[i, T - len(r) :] = True  # generated positions are always valid
    position_ids, mask = padded_positions_and_mask(key_valid[:, :T])

    was_training = model.training
    model.eval()
    model.setup_kv_cache(B, total)
    try:
        logits = model(idx, position_ids=position_ids, attention_mask=mask, cache_start=0)[:, -1]
        next_pos = position_ids[:, -1] + 1
        stop = torch.tensor(list(stop_tokens), dtype=torch.long, device=device)
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        out: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            logits[:, cfg.vocab_size :] = float("-inf")
            token = sample_next(logits, temperature, top_k, top_p, generator, row_generators)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            out.append(token)
            if stop.numel():
                finished |= torch.isin(token, stop)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            t = T + step
            logits = model(
                token.unsqueeze(1),
                position_ids=next_pos.unsqueeze(1),
                attention_mask=key_valid[:, None, : t + 1],
                cache_start=t,
            )[:, -1]
            next_pos = next_pos + 1
    finally:
        model.clear_kv_cache()
        model.train(was_training)

    tokens = torch.stack(out, dim=1).tolist()
    stops = set(stop_tokens)
    result = []
    for row in tokens:
        for j, tok in enumerate(row):
            if tok in stops:
                row = row[: j + 1]
                break
        result.append(row)
    return result


def cut_at_stop_strings(
    tokenizer, responses: list[list[int]], stop_strings: Sequence[str]
) -> list[tuple[list[int], bool]]:
    """Each response cut after the first token that completes one of `stop_strings` in the decoded text, and
    whether it was cut. (Strings may span tokens, so they are matched on text after generation.)"""
    out = []
    for tokens in responses:
        if not any(s in tokenizer.decode(tokens) for s in stop_strings):
            out.append((tokens, False))
            continue
        end = next(j for j in range(1, len(tokens) + 1) if any(s in tokenizer.decode(tokens[:j]) for s in stop_strings))
        out.append((tokens[:end], True))
    return out


def prompt_room(model: GPT, max_new_tokens: int) -> int:
    """Prompt tokens that fit in the block beside `max_new_tokens` (prompts are cropped from the left to it)."""
    check_sampling(max_new_tokens)
    room = model.config.block_size - max_new_tokens
    if room < 1:
        raise ConfigError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's block_size "
                          f"{model.config.block_size}")  # fmt: skip
    return room


def crop_prompts(model: GPT, rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Token prompts cropped from the left to leave room for `max_new_tokens` in the model's block, with one warning
    saying how many prompt tokens were dropped (the model cannot see past its block size)."""
    room = prompt_room(model, max_new_tokens)
    long = [len(r) - room for r in rows if len(r) > room]
    if long:
        fit = f"did not fit the model's block_size {model.config.block_size} beside max_new_tokens {max_new_tokens}"
        if len(rows) == 1:
            dropped = f"a prompt {fit}: dropped its first {long[0]} token(s)"
        else:
            count = str(long[0]) if min(long) == max(long) else f"{min(long)} to {max(long)}"
            dropped = f"{len(long)} of {len(rows)} prompts {fit}: dropped the first {count} token(s) of each"
        log.warning(f"{dropped}, keeping the last {room}")
    return [r[-room:] for r in rows]


def generate_text(model: GPT, tokenizer, prompts: list[str], *, max_new_tokens: int = 100, **sampling) -> list[str]:
    """Decoded continuations of text prompts, stopping at the tokenizer's EOS.

    Prompts are cropped from the left (with a warning) to leave room for `max_new_tokens` in the block; `sampling`
    takes `generate`'s temperature, top_k, top_p and seed.
    """
    encoded = [tokenizer.encode(p) for p in prompts]
    if any(not r for r in encoded):
        raise ConfigError("a prompt is empty after tokenization; give some text to continue")
    rows = crop_prompts(model, encoded, max_new_tokens)
    stops = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    outs = generate(model, rows, max_new_tokens=max_new_tokens, stop_tokens=stops, **sampling)
    return [tokenizer.decode(o) for o in outs]


def generate_responses(
    model: GPT, tokenizer, style, conversations: list[list[dict]], *, max_new_tokens: int = 100, **sampling
) -> list[str]:
    """Decoded assistant replies to conversations rendered with a prompt style, stopping at its stop tokens.

    Prompts are cropped from the left (with a warning) to leave room for `max_new_tokens`; `sampling` as in
    `generate_text`.
    """
    from lit_llm.text.templates import prompt_ids, stop_ids

    rows = crop_prompts(model, [prompt_ids(tokenizer, style, messages) for messages in conversations], max_new_tokens)
    outs = generate(model, rows, max_new_tokens=max_new_tokens, stop_tokens=stop_ids(tokenizer, style), **sampling)
    return [tokenizer.decode(o) for o in outs]
