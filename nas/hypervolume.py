"""Hypervolume of a study's front: one number for how much of the device's budget the search
has covered, comparable between runs and search strategies on the same device and data.

Reference point (documented because a hypervolume means nothing without it): the *worst useful
model on this device*, i.e. bits per byte of a model that learned nothing (uniform over the
vocabulary, the value recorded for untrained candidates), decode latency at the device's limit
(`1000 / min_tokens_per_s` ms/token) and memory at the device's RAM limit. Objectives are divided
by the reference, so the hypervolume is the share of the box [0, reference] that the feasible,
trained trials dominate: 0 = nothing found, 1 = a free, perfect model. Only feasible, trained
trials count; a point outside the box contributes nothing.

The computation is Optuna's own (`optuna._hypervolume.compute_hypervolume`, WFG for three
objectives), the same one its `plot_hypervolume_history` uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

from nas.study import OBJECTIVES, is_feasible


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


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial the hypervolume counts: finished, within the device limits, and really trained."""
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and trial.values is not None
        and is_feasible(trial)
        and bool(trial.user_attrs.get("trained"))
    )


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


def study_hypervolume(trials: Iterable[optuna.trial.FrozenTrial], reference: Reference) -> float:
    return hypervolume([t.values for t in trials if counted(t)], reference)


def hypervolume_history(
    trials: Iterable[optuna.trial.FrozenTrial], reference: Reference
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all counted trials up to it), in trial order."""
    history: list[tuple[int, float]] = []
    front: list[np.ndarray] = []  # kept non-dominated: a long study recomputes only on news
    value = 0.0
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        point = np.asarray(trial.values, dtype=float) if counted(trial) else None
        if point is not None and not any(np.all(p <= point) for p in front):
            front = [p for p in front if not np.all(point <= p)] + [point]
            value = hypervolume(front, reference)
        history.append((trial.number, value))
    return history
