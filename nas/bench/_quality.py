"""A quality model fitted to measured proxy runs, so that search strategies can be compared on
hundreds of trials without training each one.

Held-out bits per byte of the budget's proxy run is regressed (ridge, standardised features) on
shape features of the architecture: log non-embedding parameters, log active non-embedding
parameters (what an MoE token touches), log d_model, depth and untied embeddings. The fit's
leave-one-out error is reported with it, so a reader can judge how real the landscape is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas.arch import ArchConfig

RIDGE = 1e-2


def features(arch: ArchConfig) -> np.ndarray:
    embedding = arch.embedding_params
    active_non_embedding = arch.active_params - embedding
    return np.array(
        [
            math.log(arch.non_embedding_params),
            math.log(active_non_embedding),
            math.log(arch.d_model),
            float(arch.n_layers),
            0.0 if arch.tie_embeddings else 1.0,
        ]
    )


@dataclass(frozen=True)
class QualityModel:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # intercept first
    loo_mae: float  # leave-one-out mean absolute error, bits per byte
    n: int

    def predict(self, arch: ArchConfig) -> float:
        x = (features(arch) - self.mean) / self.scale
        return float(self.coef[0] + x @ self.coef[1:])


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.hstack([np.ones((len(x), 1)), x])
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(design.T @ design + penalty, design.T @ y)


def fit_quality(archs: Sequence[ArchConfig], bpbs: Sequence[float]) -> QualityModel:
    """Ridge fit of bits per byte on `features`, with its leave-one-out error."""
    if len(archs) < 6:
        raise ValueError(
            f"need >= 6 measured architectures to fit a quality model, got {len(archs)}"
        )
    raw = np.stack([features(a) for a in archs])
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    scale[scale == 0] = 1.0
    x, y = (raw - mean) / scale, np.asarray(bpbs, dtype=float)
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        coef = _solve(x[keep], y[keep])
        errors.append(abs(coef[0] + x[i] @ coef[1:] - y[i]))
    return QualityModel(mean, scale, _solve(x, y), float(np.mean(errors)), len(y))
