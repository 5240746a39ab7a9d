"""Rollout batches for PPO: prompts and sampled responses laid out for one forward pass, and the log-probs of the
response tokens under a model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_llm.generation import padded_positions_and_mask


def layout(prompts: list[list[int]], responses: list[list[int]], pad_id: int, device: torch.device) -> dict:
    """`ids` (B, P + R): each prompt left-padded to P columns, its response right after it and right-padded to R;
    `valid` marks real tokens. So column P - 1 + t predicts every row's t-th response token."""
    P, R = max(map(len, prompts)), max(map(len, responses))
    ids = torch.full((len(prompts), P + R), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids[i, P - len(p) : P] = torch.tensor(p, device=device)
        ids[i, P : P + len(r)] = torch.tensor(r, device=device)
        valid[i, P - len(p) : P + len(r)] = True
    return {"ids": ids, "valid": valid, "P": P}


def response_logps(
    net: nn.Module, ids: torch.Tensor, valid: torch.Tensor, P: int, vocab_size: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs (B, R) of the response tokens under `net` (a GPT) at `temperature`, the (B, R, vocab_size)
    logits they come from, and the hidden states (B, R, n_embd) before each response token."""
    position_ids, mask = padded_positions_and_mask(valid)
    logits, hidden = net(ids, position_ids=position_ids, attention_mask=mask, from_position=P - 1, hidden=True)
    # Padded vocabulary entries are never sampled; dropping them gives the sampling distribution.
    logits, hidden = logits[:, :-1, :vocab_size].float() / temperature, hidden[:, :-1]
    logps = torch.gather(F.log_softmax(logits, -1), -1, ids[:, P:].unsqueeze(-1)).squeeze(-1)
    return logps, logits, hidden
