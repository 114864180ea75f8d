"""Quality at the training length the user states: a learning-curve family fitted across a
study's candidates and read off at the target.

Family: bpb_i(t) = c_i + a_i * t^-beta, with t the training tokens, one exponent beta shared by
every candidate of the study (fitted to all their curves at once) and per candidate an asymptote
c_i and a scale a_i >= 0. Architecture enters through what its own curve says: a large model
still falling fast at the top rung (large a_i) gains more from longer training than a small one
that has flattened, so rankings may cross between the top rung and the target.

The uncertainty is measured, not assumed: every candidate's last rung is predicted from its
earlier rungs (same beta), and the root-mean-square error of those predictions, scaled by how
much further the target lies (in log tokens) than one rung step, is the one-sigma spread.
`python -m nas.bench fidelity` measures the real error against longer training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BETAS = np.round(np.linspace(0.05, 1.5, 30), 4)

Curve = Sequence[tuple[float, float]]  # (tokens, bpb), increasing tokens


@dataclass(frozen=True)
class CurveFit:
    beta: float
    c: np.ndarray
    a: np.ndarray
    rms: float  # residual of the fit, bits per byte

    def at(self, index: int, tokens: float) -> float:
        return float(self.c[index] + self.a[index] * tokens**-self.beta)


def _one(curve: Curve, beta: float) -> tuple[float, float, float]:
    """(c, a, squared error) of one curve's least-squares fit with a >= 0."""
    t = np.array([p[0] for p in curve], dtype=float)
    y = np.array([p[1] for p in curve], dtype=float)
    x = t**-beta
    if len(t) >= 2 and np.ptp(x) > 0:
        a, c = np.polyfit(x, y, 1)
        if a >= 0:
            return float(c), float(a), float(((c + a * x - y) ** 2).sum())
    c = float(y.mean())
    return c, 0.0, float(((y - c) ** 2).sum())


def fit(curves: Sequence[Curve]) -> CurveFit:
    """The family fitted to `curves` (each with >= 1 point); beta minimises the total error."""
    best: CurveFit | None = None
    for beta in BETAS:
        parts = [_one(curve, float(beta)) for curve in curves]
        error = sum(p[2] for p in parts)
        points = sum(len(curve) for curve in curves)
        candidate = CurveFit(
            float(beta),
            np.array([p[0] for p in parts]),
            np.array([p[1] for p in parts]),
            math.sqrt(error / max(1, points)),
        )
        if best is None or candidate.rms < best.rms - 1e-15:
            best = candidate
    assert best is not None
    return best


def holdout_rms(curves: Sequence[Curve], beta: float) -> float:
    """RMS error of predicting each curve's last point from its earlier ones (nan if none can)."""
    errors = []
    for curve in curves:
        if len(curve) < 3:
            continue
        c, a, _ = _one(curve[:-1], beta)
        tokens, bpb = curve[-1]
        errors.append(c + a * tokens**-beta - bpb)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors else float("nan")


def extrapolate(curves: Sequence[Curve], tokens: float) -> tuple[list[float], float, CurveFit]:
    """Every curve read off at `tokens`, the one-sigma spread of those values, and the fit."""
    family = fit(curves)
    values = [family.at(i, tokens) for i in range(len(curves))]
    last = [curve[-1][0] for curve in curves if len(curve) >= 2]
    step = [curve[-1][0] / curve[-2][0] for curve in curves if len(curve) >= 2]
    error = holdout_rms(curves, family.beta)
    if not last or not math.isfinite(error):
        return values, float("nan"), family
    reach = math.log(tokens / float(np.median(last))) / math.log(float(np.median(step)))
    return values, error * max(1.0, reach), family
