"""A prior on how far a candidate's bits per byte keep falling beyond a study's top rung, fitted
on longer runs than one study trains (`late_slope.yaml`).

Why: a study's rung curves (60 to 540 steps on the cpu budget) fall at nearly the same rate for
every shape, so a curve fitted to them and read off 7x beyond its last point ranks the long runs
little better than the top rung does (Kendall tau 0.64 and 0.33 on two sets of 12 architectures,
BENCHMARKS.md "Target length"). The long runs say what the rungs cannot: beyond the top rung
deeper and wider models keep falling faster (from 540 to 3,840 steps, 0.38 bpb for 1 layer of
width 64, 0.58 for 4 layers of 128, 0.65 for 4 of 256).

Form: bpb(t) = bpb(t_top) - (s0 + s_L ln layers + s_d ln d_model) ln(t / t_top), with t the
training tokens. Depth and width enter apart, not as the parameter count: a fit on the count
ranked 12 architectures it had not seen at tau 0.64 against 0.76 for this one (chosen on them),
and a third set at 0.09 against 0.30, where the plain parameter count ranked at 0.67; so it beats
the curve fit everywhere measured, and the parameter count only on two sets of three. Experts do
not enter at all (a mixture-of-experts model falls at its dense twin's rate: 0.20 against 0.19
at 1 layer of 64, 0.25 against 0.26 at 4). The rate is measured at one ratio (the rows' t /
t_top, 7.1x); that the fall stays log-linear further out is assumed, and a search warns when its
target lies further: a log-linear fall never flattens, so far out its ranking means more than
its bits per byte. The one-sigma spread is the rate's leave-one-out error over the rows, times
the log ratio. It holds for the recipe the rows were trained on (the engine's proxy corpus and
learning rate); a row from another recipe or corpus would be mixed in, so rows say where they
came from.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROWS = Path(__file__).with_name("late_slope.yaml")


@dataclass(frozen=True)
class Row:
    """One architecture trained to its top rung and much longer."""

    arch: str  # nas.bench._runs.describe
    layers: int
    d_model: int
    top_steps: int
    top_bpb: float  # mean over the top rung's seeds
    long_steps: int
    long_bpb: float  # mean over the long run's seeds

    @property
    def rate(self) -> float:
        """Bits per byte lost per unit of log tokens between the top rung and the long run."""
        return (self.top_bpb - self.long_bpb) / math.log(self.long_steps / self.top_steps)


def _x(layers: float, d_model: float) -> np.ndarray:
    return np.array([1.0, math.log(layers), math.log(d_model)])


@dataclass(frozen=True)
class LateSlope:
    """rate = s0 + s_L ln layers + s_d ln d_model, fitted to `rows` (see the module doc)."""

    coef: tuple[float, float, float]  # s0, s_L, s_d
    rate_sd: float  # leave-one-out rms error of the rate over the rows (nan below 4 rows)
    rows: int
    measured_ratio: float  # the furthest long run / top rung among the rows

    def rate(self, layers: float, d_model: float) -> float:
        return float(_x(layers, d_model) @ np.array(self.coef))

    def at(
        self, top_bpb: float, layers: float, d_model: float, top_tokens: float, tokens: float
    ) -> float:
        """Bits per byte at `tokens`, from the top rung's at `top_tokens`."""
        return top_bpb - self.rate(layers, d_model) * math.log(tokens / top_tokens)

    def sd(self, top_tokens: float, tokens: float) -> float:
        return self.rate_sd * math.log(tokens / top_tokens)

    def beyond(self, top_tokens: float, tokens: float) -> str | None:
        """A warning when `tokens` lies further beyond the top rung than the rows measured."""
        ratio = tokens / top_tokens
        if ratio <= self.measured_ratio * 1.01:
            return None
        return (
            f"target.tokens is {ratio:,.0f}x the top rung; the late-slope prior is measured to "
            f"{self.measured_ratio:.1f}x (nas/fidelity/late_slope.yaml): further out its "
            "log-linear fall is assumed, so trust its ranking more than its bits per byte "
            "(target.extrapolation=curve flattens instead)"
        )


def _coef(rows: Sequence[Row]) -> np.ndarray:
    x = np.array([_x(r.layers, r.d_model) for r in rows])
    if len(rows) < 3 or np.linalg.matrix_rank(x) < 3:
        raise ValueError("the late-slope prior needs rows of at least two depths and two widths")
    return np.linalg.lstsq(x, np.array([r.rate for r in rows]), rcond=None)[0]


def _left_out_rates(rows: Sequence[Row]) -> list[float | None]:
    """Each row's rate as the line fitted without that row predicts it (None where the row alone
    holds a depth or width apart)."""
    out: list[float | None] = []
    for i, row in enumerate(rows):
        try:
            rest = _coef([r for j, r in enumerate(rows) if j != i])
        except ValueError:
            out.append(None)
            continue
        out.append(float(_x(row.layers, row.d_model) @ rest))
    return out


def fit(rows: Sequence[Row]) -> LateSlope:
    """The prior fitted to `rows`."""
    coef = _coef(rows)
    left_out = _left_out_rates(rows)
    errors = [rate - row.rate for rate, row in zip(left_out, rows, strict=True) if rate is not None]
    sd = float(np.sqrt(np.mean(np.square(errors)))) if errors else float("nan")
    ratio = max(r.long_steps / r.top_steps for r in rows)
    return LateSlope((float(coef[0]), float(coef[1]), float(coef[2])), sd, len(rows), ratio)


def leave_one_out(rows: Sequence[Row]) -> list[float]:
    """Each row's long-run bits per byte as the prior fitted without that row predicts it."""
    out = []
    for rate, row in zip(_left_out_rates(rows), rows, strict=True):
        if rate is None:
            raise ValueError(f"without {row.arch} the rows hold one depth or one width")
        out.append(row.top_bpb - rate * math.log(row.long_steps / row.top_steps))
    return out


def read_rows(path: Path = ROWS) -> list[Row]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return [
        Row(
            str(r["arch"]),
            int(r["layers"]),
            int(r["d_model"]),
            int(r["top_steps"]),
            float(np.mean(r["top_bpb"])),
            int(r["long_steps"]),
            float(np.mean(r["long_bpb"])),
        )
        for r in data["rows"]
    ]


@functools.lru_cache(maxsize=64)
def prior(path: Path = ROWS, leave_out: tuple[str, ...] = ()) -> LateSlope:
    """The shipped prior; `leave_out` drops the rows of those architectures (a bench that grades
    the prior on architectures it was fitted on refits it without each one)."""
    return fit([r for r in read_rows(path) if r.arch not in leave_out])
