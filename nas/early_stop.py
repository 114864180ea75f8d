"""Multi-objective early stopping of proxy training (Optuna has no pruning for such studies).

At a few checkpoints of a trial's proxy run, held-out bits per byte is measured. The trial is
stopped when a finished trial that is no slower (decode ms) and no larger (memory MB) had already
reached a lower bits per byte *at the same checkpoint*: it is then dominated on every objective at
equal training, and learning curves of models in this range rarely cross afterwards (measured by
`python -m nas.bench early_stop`). Comparing at the same step, not against the other trial's final
value, keeps the rule fair to a trial that has only seen a part of its budget.

A stopped trial is recorded as PRUNED (never a finished Pareto member) with its partial curve and
the number of the trial that beat it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from nas.proxies import checkpoint_steps
from nas.study import is_feasible


@dataclass(frozen=True)
class Finished:
    """What the rule needs to know about a finished trial."""

    number: int
    decode_ms: float
    memory_mb: float
    checkpoints: dict[int, float]  # steps done -> held-out bpb


@dataclass(frozen=True)
class EarlyStopping:
    """Stop a trial that a finished, no slower and no larger trial beats at the same checkpoint.

    Args:
        fractions: where to check, as fractions of the proxy's steps.
        margin: bits per byte the other trial must be better by (0 = any amount).
    """

    fractions: tuple[float, ...] = (0.25, 0.5)
    margin: float = 0.0

    def steps(self, total_steps: int) -> list[int]:
        return checkpoint_steps(self.fractions, total_steps)

    def beaten_by(
        self,
        step: int,
        bpb: float,
        decode_ms: float,
        memory_mb: float,
        finished: Iterable[Finished],
    ) -> Finished | None:
        """The first finished trial that dominates this one at `step`, or None."""
        for other in finished:
            at = other.checkpoints.get(step)
            if (
                at is not None
                and at + self.margin <= bpb
                and other.decode_ms <= decode_ms
                and other.memory_mb <= memory_mb
            ):
                return other
        return None


def finished_trials(study: optuna.Study) -> list[Finished]:
    """Feasible, fully trained, finished trials with their checkpoint values."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if not (attrs.get("trained") and is_feasible(t) and attrs.get("checkpoints")):
            continue
        out.append(from_attrs(t.number, attrs))
    return out


def from_attrs(number: int, attrs: dict[str, Any]) -> Finished:
    metrics = attrs["metrics"]
    return Finished(
        number=number,
        decode_ms=float(metrics["decode_ms"]),
        memory_mb=float(metrics["memory_mb"]),
        checkpoints={int(c[0]): float(c[1]) for c in attrs["checkpoints"]},
    )


def make_early_stopping(cfg: dict[str, Any] | None) -> EarlyStopping | None:
    """The `proxy.early_stop` settings: None when disabled."""
    if not cfg or not cfg.get("enabled", False):
        return None
    fractions: Sequence[float] = cfg.get("checkpoints", (0.25, 0.5))
    return EarlyStopping(fractions=tuple(float(f) for f in fractions), margin=float(cfg["margin"]))
