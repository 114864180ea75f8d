"""A prior on how far a candidate's bits per byte keep falling beyond a study's top rung, fitted
on longer runs than one study trains (`late_slope.yaml`).

Why: a study's rung curves (60 to 540 steps on the cpu budget) fall at nearly the same rate for
every shape, so a curve fitted to them and read off 7x beyond its last point ranks the long runs
little better than the top rung does (Kendall tau 0.64 on 12 architectures, BENCHMARKS.md
"Target length"). The long runs say what the rungs cannot: beyond the top rung a larger model
keeps falling faster (0.38 bpb from 540 to 3,840 steps at 66k non-embedding parameters, 0.56 at
545k).

Form: bpb(t) = bpb(t_top) - (s0 + s1 ln N) ln(t / t_top), with N the non-embedding parameters
(every expert counted, as the `params` proxy counts them) and t the training tokens. The rate is
measured at one ratio (the rows' t / t_top, 7.1x); that the fall stays log-linear further out
is assumed, and a search warns when its target lies further: a log-linear fall never flattens,
so far out its ranking (which tends to the order of N) means more than its bits per byte. The
one-sigma spread is the rate's leave-one-out error over the rows, times the log ratio. It holds
for the recipe the rows were trained on (the engine's proxy corpus and learning rate); a row
from another recipe or corpus would be mixed in, so rows say where they came from.
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
    n: int  # non-embedding parameters
    top_steps: int
    top_bpb: float  # mean over the top rung's seeds
    long_steps: int
    long_bpb: float  # mean over the long run's seeds

    @property
    def rate(self) -> float:
        """Bits per byte lost per unit of log tokens between the top rung and the long run."""
        return (self.top_bpb - self.long_bpb) / math.log(self.long_steps / self.top_steps)


@dataclass(frozen=True)
class LateSlope:
    """rate(N) = s0 + s1 ln N, fitted to `rows` (see the module doc)."""

    s0: float
    s1: float
    rate_sd: float  # leave-one-out rms error of the rate over the rows (nan below 3 rows)
    rows: int
    n_range: tuple[int, int]
    measured_ratio: float  # the furthest long run / top rung among the rows

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

    def rate(self, n: float) -> float:
        return self.s0 + self.s1 * math.log(n)

    def at(self, top_bpb: float, n: float, top_tokens: float, tokens: float) -> float:
        """Bits per byte at `tokens`, from the top rung's at `top_tokens`."""
        return top_bpb - self.rate(n) * math.log(tokens / top_tokens)

    def sd(self, top_tokens: float, tokens: float) -> float:
        return self.rate_sd * math.log(tokens / top_tokens)


def _line(rows: Sequence[Row]) -> tuple[float, float]:
    x = np.log([r.n for r in rows])
    y = np.array([r.rate for r in rows])
    s1, s0 = np.polyfit(x, y, 1)
    return float(s0), float(s1)


def fit(rows: Sequence[Row]) -> LateSlope:
    """The prior fitted to `rows` (at least two, of different sizes)."""
    if len(rows) < 2 or len({r.n for r in rows}) < 2:
        raise ValueError("the late-slope prior needs rows of at least two sizes")
    s0, s1 = _line(rows)
    errors = []
    for i, row in enumerate(rows):
        rest = [r for j, r in enumerate(rows) if j != i]
        if len({r.n for r in rest}) >= 2:
            t0, t1 = _line(rest)
            errors.append(t0 + t1 * math.log(row.n) - row.rate)
    sd = float(np.sqrt(np.mean(np.square(errors)))) if len(rows) >= 3 else float("nan")
    sizes = [r.n for r in rows]
    ratio = max(r.long_steps / r.top_steps for r in rows)
    return LateSlope(s0, s1, sd, len(rows), (min(sizes), max(sizes)), ratio)


def leave_one_out(rows: Sequence[Row]) -> list[float]:
    """Each row's long-run bits per byte as the prior fitted without that row predicts it."""
    out = []
    for i, row in enumerate(rows):
        rest = fit([r for j, r in enumerate(rows) if j != i])
        out.append(rest.at(row.top_bpb, row.n, row.top_steps, row.long_steps))
    return out


def read_rows(path: Path = ROWS) -> list[Row]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return [
        Row(
            str(r["arch"]),
            int(r["n"]),
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
