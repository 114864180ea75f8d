"""Seed statistics: every top-rung candidate is trained with the same seeds (paired), so that
what a seed does to every candidate alike cancels when two candidates are compared."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def interaction_sd(table: Sequence[Sequence[float]]) -> float:
    """The architecture x seed interaction's standard deviation: the residual of the additive
    model bpb = architecture + seed over candidates (rows) and paired seeds (columns). It is the
    noise pairing cannot cancel; nan with fewer than two rows or columns."""
    x = np.asarray(table, dtype=float)
    if x.ndim != 2 or min(x.shape) < 2:
        return float("nan")
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    dof = (x.shape[0] - 1) * (x.shape[1] - 1)
    return float(math.sqrt(float((residual**2).sum()) / dof))


def within_noise(a: Sequence[float], b: Sequence[float], noise_sd: float) -> bool:
    """Whether two candidates' paired seed means differ by less than two standard errors of a
    paired difference (each mean carries `noise_sd / sqrt(seeds)`)."""
    if not math.isfinite(noise_sd) or not a or not b:
        return False
    seeds = min(len(a), len(b))
    return abs(float(np.mean(a)) - float(np.mean(b))) < 2.0 * noise_sd * math.sqrt(2.0 / seeds)
