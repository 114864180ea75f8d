"""Multi-objective early stopping of proxy training (Optuna has no pruning for such studies).

At a few checkpoints of a trial's proxy run, held-out bits per byte is measured. The trial is
stopped when a finished trial that is no slower (decode ms) and no larger (memory MB) had already
reached a lower bits per byte *at the same checkpoint*: it is then dominated on every objective at
equal training, and learning curves of models in this range rarely cross afterwards (measured by
`python -m nas.bench early_stop`). Comparing at the same step, not against the other trial's final
value, keeps the rule fair to a trial that has only seen a part of its budget.

With `min_gain` set, a second test also stops a trial whose *projected* point adds less than
`min_gain` (a share of the current hypervolume) to the finished trials' front: its bits per byte
at the checkpoint is projected to the end of the run with a quantile (configured: 0.25) of the
finished trials' ratios (final objective / bpb at that step), so the projection carries the
typical gain of the remaining steps and of compression. This targets hypervolume loss directly.

A stopped trial is recorded as PRUNED (never a finished Pareto member) with its partial curve and
the number of the trial that beat it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import optuna

from nas import records
from nas.config.schema import EarlyStopConfig
from nas.objectives.hypervolume import Reference, hypervolume
from nas.quality.scorers import checkpoint_steps


@dataclass(frozen=True)
class Finished:
    """What the rule needs to know about a finished trial."""

    number: int
    decode_ms: float
    memory_mb: float
    checkpoints: dict[int, float]  # steps done -> held-out bpb
    values: tuple[float, ...] = ()  # the objectives (bpb, decode_ms, memory_mb)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop a trial that a finished, no slower and no larger trial beats at the same checkpoint.

    Args:
        fractions: where to check, as fractions of the proxy's steps.
        margin: bits per byte the other trial must be better by (0 = any amount).
        min_gain: also stop when the projected hypervolume gain is below this share of the
            current hypervolume (None = dominance only).
        quantile: which ratio of the finished trials projects the end of the run (0.5 = the
            median; lower = more optimistic about this trial, fewer stops).
    """

    fractions: tuple[float, ...] = (0.25, 0.5)
    margin: float = 0.0
    min_gain: float | None = None
    quantile: float = 0.5

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

    def should_stop(
        self,
        step: int,
        bpb: float,
        decode_ms: float,
        memory_mb: float,
        finished: list[Finished],
        reference: Reference | None,
    ) -> str | None:
        """Why this trial should stop at `step` (a short reason), or None to go on."""
        other = self.beaten_by(step, bpb, decode_ms, memory_mb, finished)
        if other is not None:
            return f"trial {other.number} is no slower, no larger and was better at step {step}"
        if self.min_gain is None or reference is None:
            return None
        ratios = [f.values[0] / f.checkpoints[step] for f in finished if step in f.checkpoints]
        if len(ratios) < 3:
            return None  # too few finished trials to project from
        projected = (bpb * float(np.quantile(ratios, self.quantile)), decode_ms, memory_mb)
        front = [f.values for f in finished]
        now = hypervolume(front, reference)
        gain = hypervolume([*front, projected], reference) - now
        if now > 0 and gain < self.min_gain * now:
            return (
                f"projected hypervolume gain {gain / now:.2%} < {self.min_gain:.2%} at step {step}"
            )
        return None


def finished_trials(study: optuna.Study) -> list[Finished]:
    """Finished, trained, feasible trials that measured checkpoints in rung 0 (every candidate
    has rung 0), with their checkpoint values."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    measured = [records.read(t) for t in done if records.learns(t)]
    return [finished(r) for r in measured if r.checkpoints]


def finished(record: records.TrialRecord) -> Finished:
    """What the rule needs of a finished trial's record."""
    return Finished(
        number=record.number,
        decode_ms=float(record.metrics["decode_ms"]),
        memory_mb=float(record.metrics["memory_mb"]),
        checkpoints={int(c[0]): float(c[1]) for c in record.checkpoints},
        values=tuple(record.values or ()),
    )


def make_early_stopping(cfg: EarlyStopConfig) -> EarlyStopping | None:
    """The `proxy.early_stop` settings: None when disabled."""
    if not cfg.enabled:
        return None
    return EarlyStopping(
        fractions=tuple(float(f) for f in cfg.checkpoints),
        margin=float(cfg.margin),
        min_gain=None if cfg.min_gain is None else float(cfg.min_gain),
        quantile=float(cfg.quantile),
    )
