"""The optimizer every stage uses: AdamW parameter groups, the warmup + cosine schedule, the gradient norm."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices of linear layers; never norms, biases or embeddings (tied weights counted once)."""
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            no_decay_ids.add(id(module.weight))
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a tied tensor once
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or id(p) in no_decay_ids else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW over `param_groups`, fused where the device supports it, else the foreach kernels."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def warmup_cosine(step: int, peak: float, floor: float, warmup_steps: int, decay_steps: int) -> float:
    """Linear warmup to `peak` over `warmup_steps`, cosine decay to `floor` at `decay_steps`, then `floor`."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return floor
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, peak: float, floor: float, warmup_steps: int, decay_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, peak, floor, warmup_steps, decay_steps) / peak
    )


def total_grad_norm(parameters) -> torch.Tensor:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


def clip_sharded_grad_norm(parameters, max_norm: float, reduce_sum) -> torch.Tensor:
    """Clip gradients sharded over ranks (FSDP's, each rank holding a part of every gradient) to a total norm of
    `max_norm`: the norm is that of all ranks' parts together (`reduce_sum` sums a tensor over ranks), and every
    part is scaled by the same factor. Returns the norm before clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    local = sum((g.detach().float().pow(2).sum() for g in grads), torch.zeros(()))
    norm = reduce_sum(local.to(grads[0].device) if grads else local).sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device, g.dtype))
    return norm
