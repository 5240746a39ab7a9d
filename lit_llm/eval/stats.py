"""Small statistics for comparing models on the same prompts: percentile bootstrap intervals and pass@k.

Bootstraps resample prompt indices with replacement: `num_samples` rows of n indices drawn by
`np.random.default_rng(seed).integers(0, n, size=(rows, n))`, chunk after chunk of rows (the stream is the same as
one (num_samples, n) draw, so chunking never changes a result). The interval is the (1 - confidence) / 2 and
(1 + confidence) / 2 quantiles of the resampled means, `np.quantile`'s default (linear) interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lit_llm.errors import ConfigError

CHUNK = 1 << 22  # indices drawn per chunk (32 MiB of int64): a (num_samples, n) matrix can be too large at once


def _resampled_means(x: np.ndarray, num_samples: int, seed: int) -> np.ndarray:
    n = len(x)
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // n)
    means = np.empty(num_samples)
    for start in range(0, num_samples, rows):
        stop = min(start + rows, num_samples)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def _checked(values: Sequence[float], num_samples: int, confidence: float) -> np.ndarray:
    if num_samples < 1:
        raise ConfigError(f"bootstrap must be at least 1 resample, got {num_samples}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    return np.asarray(values, dtype=float).reshape(-1)


def bootstrap_mean_interval(
    x: Sequence[float], num_samples: int = 10000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `x` and its percentile-bootstrap interval; all nan when `x` is empty."""
    x = _checked(x, num_samples, confidence)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    low, high = np.quantile(_resampled_means(x, num_samples, seed), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(x.mean()), float(low), float(high)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], num_samples: int = 10000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean_diff, low, high): mean(a - b) over paired items (a[i] and b[i] scored on the same prompt) and its
    percentile interval from resampling the pairs, i.e. the same indices for both arrays."""
    a, b = _checked(a, num_samples, confidence), _checked(b, num_samples, confidence)
    if len(a) != len(b):
        raise ValueError(f"paired_bootstrap needs arrays of one length, got {len(a)} and {len(b)}")
    return bootstrap_mean_interval(a - b, num_samples, seed, confidence)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): `lit_llm.metrics.pass_at_k`, which `lit-llm evaluate` uses too
    (imported on the call: lit_llm.metrics loads torch, and this module, which the CLI imports, does not)."""
    from lit_llm.metrics import pass_at_k as unbiased_pass_at_k

    return unbiased_pass_at_k(n, c, k)
