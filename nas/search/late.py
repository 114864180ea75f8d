"""Late promotions: a candidate that was not in its rung's top share when it finished goes on
once it is, as in ASHA (Li et al. 2020), instead of the first candidates going on for lack of
peers.

A climb runs inside its trial with the model in memory, and a finished Optuna trial cannot be
resumed. So a late promotion is a new trial, queued with the candidate's parameters
(`study.enqueue_trial`; the next free worker, on any machine, takes it before sampling). It
carries the rungs the candidate finished (`records.continuation_attrs`), retrains its trunk to
there (the batches are a function of seed and step, so it is the same model, with no checkpoint
to share between machines) and climbs on. From then on it stands for the candidate: the trial it
continues leaves every rung's field.

Two workers can queue the same promotion at once; the copy with the larger number stands down
when it starts (`standing_down`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import records
from nas.fidelity.promotion import promotable
from nas.fidelity.rungs import Rungs
from nas.objectives.hypervolume import Reference

if TYPE_CHECKING:
    from nas.search.trial import TrialObjective

GRACE_S = 60.0  # a promotion may end this long after the study's timeout, no longer
CLOCK = "not enough time left before the study's timeout"  # why a promotion was refused
QUEUED = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


def field(
    trials: Sequence[FrozenTrial], rung: int, without: int | None = None
) -> tuple[np.ndarray, list[FrozenTrial]]:
    """(bpb at `rung`, decode ms, memory MB) of each candidate measured there so far, with its
    trial, leaving out trial `without`. Each candidate once: not a reused twin (`cached_from`),
    not a failed attempt or a queued copy (a retry or a continuation carries their rungs), and
    not a trial that a running or finished continuation stands for."""
    taken = records.continued(trials)
    rows, who = [], []
    for t in trials:
        if t.state not in records.LIVE or t.number in taken or t.number == without:
            continue
        if records.cached_from(t) is not None:
            continue
        entry = records.read(t).rung_result(rung) if records.is_feasible(t) else None
        if entry is not None:
            rows.append((entry["bpb_seeds"][0], entry["decode_ms"], entry["memory_mb"]))
            who.append(t)
    return np.array(rows, dtype=float).reshape(-1, 3), who


def loose_reference(points: np.ndarray) -> Reference:
    """A reference for a study that stored none (not run by nas.search): 1.1 x the worst."""
    worst = points.max(axis=0) * 1.1
    return Reference(float(worst[0]), float(worst[1]), float(worst[2]))


def queue_late_promotion(
    study: optuna.Study,
    rungs: Rungs,
    *,
    deadline: float | None = None,
    grace_s: float = 0.0,
    round_up: bool = False,
) -> int | None:
    """Queue the best candidate that is now in its rung's top share but stayed there, looking
    at the highest rung first (ASHA's order); returns the trial it continues, or None.

    One per call: each finished climb asks once, so promotions keep pace with the rungs' growth.
    A candidate is queued once, whatever became of its continuation (one that diverged is not
    tried again). One that the clock stopped, or whose climb from scratch to the top would end
    past `deadline` + `grace_s` at its own measured pace, is not queued. `round_up`: the share
    once the study samples no more candidates (`nas.fidelity.promotion.places`).
    """
    trials = study.get_trials(deepcopy=False)
    queued = {records.continues(t) for t in trials} - {None}
    stored = records.reference(study)
    for rung in reversed(range(rungs.top)):
        points, who = field(trials, rung)
        if not who:
            continue
        reference = Reference.from_dict(stored) if stored else loose_reference(points)
        for index in promotable(points, reference, rungs.eta, round_up):
            t = who[index]
            r = records.read(t)
            stayed = (r.promotion or "").startswith("stayed") and CLOCK not in r.promotion
            if t.state != TrialState.COMPLETE or r.rung != rung or not stayed:
                continue  # went on already, still deciding, or stopped by the clock
            if t.number in queued or not _in_time(r, rungs, rung, deadline, grace_s):
                continue
            study.enqueue_trial(t.params, user_attrs=records.continuation_attrs(t, rung))
            return t.number
    return None


class Closing:
    """`run_trials`' `then`: after the run's last trial no peer will come, so each rung's top
    share is rounded up and the late promotions this leaves run before the study ends, in its
    time. Returns how many trials wait (`grow` is told as much: the progress bar). `trials`: the
    run's trial count where this process starts every one (it knows the last, which rounds up).
    """

    def __init__(
        self,
        study: optuna.Study,
        objective: TrialObjective,
        rungs: Rungs,
        grow: Callable[[int], None],
        *,
        trials: int | None,
    ) -> None:
        self.study, self.objective, self.rungs, self.grow = study, objective, rungs, grow
        objective.trials_left = trials

    def __call__(self) -> int:
        self.objective.closing = True
        deadline = self.objective.deadline
        queue_late_promotion(
            self.study, self.rungs, deadline=deadline, grace_s=GRACE_S, round_up=True
        )
        waiting = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        self.grow(waiting)
        return waiting


def standing_down(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """For a continuation: an earlier-numbered copy that continues the same trial (queued by
    another worker at the same moment), which goes on instead of this one; else None."""
    origin = records.continues(trial)
    if origin is None:
        return None
    for t in study.get_trials(deepcopy=False, states=QUEUED):
        if t.number < trial.number and records.continues(t) == origin:
            return t.number
    return None


def _in_time(
    record: records.TrialRecord, rungs: Rungs, rung: int, deadline: float | None, grace_s: float
) -> bool:
    """Whether retraining to `rung` and climbing to the top (every seed) ends in time, at the
    pace the candidate trained at before (seconds per step to its rung's result)."""
    if deadline is None:
        return True
    reached = record.rung_result(rung)
    assert reached is not None
    per_step = reached["seconds"] / max(1, rungs.ladder_cost(rung))
    steps = rungs.ladder_cost(rungs.top) + (rungs.seeds - 1) * rungs.total(rungs.top)
    return time.time() + per_step * steps <= deadline + grace_s
