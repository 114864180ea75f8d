"""What each front candidate is judged on: its top rung's bits per byte, or that extrapolated to
the study's target training length, with the uncertainty of either.

Only candidates measured at the study's top rung are judged (`nas.records.counts`): values of
different rungs are never compared as if they were equal. Measured quality is the mean over the
paired seeds; its spread is the seeds' standard deviation. When the study's target lies beyond
the top rung, every judged candidate's top rung is read on to the target by the late-slope prior,
fitted on longer runs (`nas.fidelity.late_slope`, the default), or read off one learning-curve
family fitted to all their rung curves at once (`nas.fidelity.target`, `target.extrapolation=
curve`); either way every candidate is read the same way, so their values stay comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from nas import records
from nas.arch import ArchConfig
from nas.fidelity import late_slope
from nas.fidelity.noise import interaction_sd
from nas.fidelity.target import extrapolate


@dataclass(frozen=True)
class Judged:
    """A front candidate with the quality it is judged on."""

    trial: optuna.trial.FrozenTrial
    record: records.TrialRecord
    quality: float  # bits per byte after compression, at the top rung or the target
    sd: float  # one-sigma uncertainty of `quality` (seeds, or the extrapolation)
    basis: str  # what `quality` is: "rung 2, 2 seeds" or "extrapolated to 3.9M tokens"
    seeds: tuple[float, ...]  # per-seed bits per byte at the top rung (paired across candidates)

    @property
    def point(self) -> tuple[float, float, float]:
        """(quality, decode ms, memory MB): the costs are the trial's own values."""
        values = self.record.values or (float("nan"),) * 3
        return self.quality, float(values[1]), float(values[2])


def _measured(trial: optuna.trial.FrozenTrial, record: records.TrialRecord) -> Judged:
    top = record.rung_result(record.rungs[-1]["rung"]) if record.rungs else None
    seeds = tuple(top.get("bpb_seeds", ())) if top else ()
    sd = float(record.metrics.get("bpb_sd", 0.0))
    basis = f"rung {top['rung']}, {len(seeds)} seed(s)" if top else "measured"
    # Studies from before rungs: the trial's value is its only, measured, quality.
    quality = float(record.metrics.get("bpb", (record.values or (float("nan"),))[0]))
    return Judged(trial, record, quality, sd, basis, seeds)


def _curve(record: records.TrialRecord) -> list[tuple[float, float]]:
    """A candidate's rung curve: (tokens, compressed bpb of the first seed) per rung."""
    return [(float(r["tokens"]), float(r["bpb_seeds"][0])) for r in record.rungs]


def judge(
    trials: Iterable[optuna.trial.FrozenTrial], target: Mapping[str, Any] | None = None
) -> list[Judged]:
    """The counted trials with the quality each is judged on (`target`: the study's
    `nas.records.target`; none, or one within the top rung, means measured quality)."""
    judged = [_measured(t, records.read(t)) for t in trials if records.counts(t)]
    tokens = float((target or {}).get("tokens") or 0)
    if not judged or not all(j.record.rungs for j in judged):
        return judged
    if tokens <= max(float(j.record.rungs[-1]["tokens"]) for j in judged):
        return judged
    # Studies from before the prior were judged on their own curves.
    if (target or {}).get("extrapolation", "curve") == "late_slope":
        return [_late_slope(j, tokens) for j in judged]
    if not all(len(j.record.rungs) >= 2 for j in judged):
        return judged
    values, spread, _ = extrapolate([_curve(j.record) for j in judged], tokens)
    out = []
    for j, value in zip(judged, values, strict=True):
        # The curve follows the first seed; the other seeds' mean offset at the top rung carries
        # over (paired seeds: the same shift for every candidate's comparison).
        offset = j.quality - float(j.record.rungs[-1]["bpb_seeds"][0])
        sd = math.hypot(spread, j.sd) if math.isfinite(spread) else float("nan")
        basis = f"extrapolated to {tokens:,.0f} tokens"
        out.append(Judged(j.trial, j.record, value + offset, sd, basis, j.seeds))
    return out


def _late_slope(j: Judged, tokens: float) -> Judged:
    """`j`'s top-rung quality read on to `tokens` by the late-slope prior."""
    slope = late_slope.prior()
    top = float(j.record.rungs[-1]["tokens"])
    arch = ArchConfig.from_dict(j.record.arch)  # as trained and scored (a pruned shape's own)
    value = slope.at(j.quality, arch.n_layers, arch.d_model, top, tokens)
    sd = math.hypot(slope.sd(top, tokens), j.sd)
    basis = f"extrapolated to {tokens:,.0f} tokens (late-slope prior)"
    return Judged(j.trial, j.record, value, sd, basis, j.seeds)


def noise_sd(judged: Iterable[Judged]) -> float:
    """The seed x architecture noise of the judged candidates' paired top-rung seeds."""
    rows = [list(j.seeds) for j in judged if len(j.seeds) >= 2]
    width = min((len(r) for r in rows), default=0)
    return interaction_sd([r[:width] for r in rows]) if len(rows) >= 2 else float("nan")
