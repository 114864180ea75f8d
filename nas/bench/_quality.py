"""A quality model fitted to measured proxy runs, so that search strategies can be compared on
hundreds of trials without training each one.

Held-out bits per byte of the budget's proxy run is regressed (ridge, standardised features) on
shape features of the architecture: log non-embedding parameters, log active non-embedding
parameters (what an MoE token touches), log d_model, depth and untied embeddings. The fit's
leave-one-out error is reported with it, so a reader can judge how real the landscape is.

Compression's cost in bits per byte is fitted separately, from trials of real studies that
measured both the trained and the compressed model: an additive least-squares effect per weight
format (int8/int4 x group size) and per sparsity pattern, fp16 dense being zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nas.arch import ArchConfig, CompressionConfig

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

    compression: dict[str, float] = field(default_factory=dict)  # effect name -> bpb added

    def predict(self, arch: ArchConfig, compression: CompressionConfig | None = None) -> float:
        x = (features(arch) - self.mean) / self.scale
        penalty = sum(self.compression.get(e, 0.0) for e in effects(compression))
        return float(self.coef[0] + x @ self.coef[1:]) + penalty


def effects(compression: CompressionConfig | None) -> list[str]:
    """The named compression effects a configuration has (none for fp16 dense)."""
    if compression is None:
        return []
    out = []
    if compression.weight_bits < 16:
        out.append(f"int{compression.weight_bits}g{compression.group_size}")
    if compression.sparsity_pattern != "none":
        out.append(compression.sparsity_pattern)
    return out


def fit_compression(
    configs: Sequence[CompressionConfig], deltas: Sequence[float]
) -> dict[str, float]:
    """Additive least-squares effect of each compression choice on bits per byte."""
    names = sorted({e for c in configs for e in effects(c)})
    if not names:
        return {}
    design = np.array([[1.0 if n in effects(c) else 0.0 for n in names] for c in configs])
    coef, *_ = np.linalg.lstsq(design, np.asarray(deltas, dtype=float), rcond=None)
    return dict(zip(names, (float(v) for v in coef), strict=True))


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.hstack([np.ones((len(x), 1)), x])
    penalty = RIDGE * np.eye(design.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(design.T @ design + penalty, design.T @ y)


def fit_quality(
    archs: Sequence[ArchConfig], bpbs: Sequence[float], compression: dict[str, float] | None = None
) -> QualityModel:
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
    return QualityModel(
        mean, scale, _solve(x, y), float(np.mean(errors)), len(y), dict(compression or {})
    )
