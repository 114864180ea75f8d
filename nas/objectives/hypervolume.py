"""Hypervolume of a study's front: one number for how much of the search space's cost/quality
box the search has covered, comparable between runs and search strategies on the same device,
search space, budget and data.

Reference point (documented because a hypervolume means nothing without it), per objective:
- bits per byte: a model that learned nothing (uniform over the vocabulary, the value recorded for
  untrained candidates);
- decode ms and memory MB: the *nadir of the budget's own search space*, i.e. the worst value any
  candidate of the capped space can have according to the study's cheap predictors, times
  `NADIR_MARGIN`, and never above the device's limit (a candidate over the limit is infeasible and
  counts for nothing anyway).

Why not the device limits alone (the reference of studies before 2026-11-29): the volume a point
dominates is the product of its distances to the reference, so an axis only matters when the
candidates' values spread over a good part of it. At `budget=cpu` on a Pixel 8 every candidate
decodes in 0.33-1.1 ms against a 50 ms limit and takes 60-91 MB against 2,048 MB, so those
distances varied by < 2% and the hypervolume was effectively "best bits per byte found". Against
the space's nadir, the fastest candidate is ~3x as far from the reference as the slowest one, so
latency and memory count as much as quality. The margin keeps the nadir candidate itself inside
the box (at the nadir exactly it would add nothing). The nadir is found with the same predictors
the study prices candidates with (calibrated when the device has a calibration), by coordinate
ascent over the space's choices (`space_nadir`); the roofline and memory models grow with every
size choice, for which this ascent finds the maximum.

Each study stores its reference (study user attr `hypervolume_reference`) when it is created and
keeps it: a study started with the device-limit reference keeps that one, so its numbers stay
comparable with what it reported before.

Objectives are divided by the reference, so the hypervolume is the share of the box [0, reference]
that the feasible, trained trials dominate: 0 = nothing found, 1 = a free, perfect model. Only
feasible, trained trials count; a point outside the box contributes nothing.

The computation is Optuna's own (`optuna._hypervolume.compute_hypervolume`, WFG for three
objectives), the same one its `plot_hypervolume_history` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from nas import records
from nas.fidelity.judge import judge
from nas.records import OBJECTIVES

if TYPE_CHECKING:
    from nas.arch import Candidate
    from nas.hardware import DeployBudget
    from nas.objectives.cheap import CheapObjectives
    from search_spaces import SearchSpace

NADIR_MARGIN = 1.1  # the worst candidate of the space still dominates 1 - 1/1.1 = 9% of an axis
MAX_SWEEPS = 8  # coordinate ascent stops earlier, as soon as a sweep changes nothing


@dataclass(frozen=True)
class Reference:
    """The hypervolume reference point, in the objectives' own units (see the module doc)."""

    bpb: float
    decode_ms: float
    memory_mb: float

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in OBJECTIVES], dtype=float)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Reference:
        return cls(**{name: float(values[name]) for name in OBJECTIVES})


def space_reference(
    space: SearchSpace, cheap: CheapObjectives, deploy: DeployBudget, uniform_bpb: float
) -> Reference:
    """The reference point of a new study (see the module doc)."""
    decode = space_nadir(space, lambda c: cheap(c).decode.mean)
    memory = space_nadir(space, lambda c: cheap(c).memory.mean)
    return Reference(
        bpb=uniform_bpb,
        decode_ms=min(decode * NADIR_MARGIN, deploy.max_decode_ms),
        memory_mb=min(memory * NADIR_MARGIN, deploy.max_memory_mb),
    )


class _Probe:
    """Stands in for an Optuna trial: answers each `suggest_*` from `chosen` (else the largest
    choice) and records the choices every parameter offered, for `space_nadir`."""

    def __init__(self, chosen: dict[str, Any]) -> None:
        self.chosen = chosen
        self.offered: dict[str, list[Any]] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.offered[name] = list(choices)
        value = self.chosen.get(name, choices[-1])
        return value if value in self.offered[name] else choices[-1]

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        return int(self.suggest_categorical(name, [low, high]))

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        return float(self.suggest_categorical(name, [low, high]))


def space_nadir(space: SearchSpace, value: Callable[[Candidate], float]) -> float:
    """The largest `value` of any candidate of `space`, by coordinate ascent over its choices.

    Sweeps every parameter the space asks for (conditional ones appear as their parent changes)
    and keeps any choice that raises `value`, until a sweep changes nothing. Exact for values that
    grow with each choice or are maximised one choice at a time, as the cost predictors are;
    integer and float parameters are tried at their bounds only. Deterministic, a few hundred
    predictor calls.
    """
    chosen: dict[str, Any] = {}
    probe = _Probe(chosen)
    best = value(space.suggest(probe))  # type: ignore[arg-type]  # duck-typed trial
    for _ in range(MAX_SWEEPS):
        improved = False
        for name, choices in list(probe.offered.items()):
            for choice in choices:
                trying = _Probe({**chosen, name: choice})
                score = value(space.suggest(trying))  # type: ignore[arg-type]
                if score > best:
                    best, chosen, probe, improved = score, trying.chosen, trying, True
        if not improved:
            break
    return best


def hypervolume(points: Iterable[Sequence[float]], reference: Reference) -> float:
    """Normalised hypervolume (0..1) of objective vectors (bpb, decode_ms, memory_mb)."""
    ref = reference.as_array()
    scaled = np.array([np.asarray(p, dtype=float) / ref for p in points], dtype=float)
    if scaled.size == 0:
        return 0.0
    scaled = scaled[np.all(scaled < 1.0, axis=1)]
    if scaled.size == 0:
        return 0.0
    return float(compute_hypervolume(scaled, np.ones(len(OBJECTIVES))))


def study_hypervolume(
    trials: Iterable[optuna.trial.FrozenTrial],
    reference: Reference,
    target: dict[str, Any] | None = None,
) -> float:
    """Hypervolume of the counted trials' judged points (`nas.fidelity.judge`)."""
    return hypervolume([j.point for j in judge(trials, target)], reference)


def hypervolume_history(
    trials: Iterable[optuna.trial.FrozenTrial],
    reference: Reference,
    target: dict[str, Any] | None = None,
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the counted trials up to it), in trial order. The volume
    is recomputed only when a counted trial arrives (a small share of a multi-fidelity study);
    with an extrapolated target every judged value may move then."""
    history: list[tuple[int, float]] = []
    seen: list[optuna.trial.FrozenTrial] = []
    value = 0.0
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        seen.append(trial)
        if records.counts(trial):
            value = study_hypervolume(seen, reference, target)
        history.append((trial.number, value))
    return history
