"""Which trials `trial=` names: a number, `pareto` (exactly pareto.json's members) or
`best:METRIC` (the best counted trial on one metric)."""

from __future__ import annotations

from typing import Any

import optuna

from nas import records
from nas.errors import NasError
from nas.fidelity.judge import judge
from nas.objectives.pareto import front_members

MAXIMISED = {"tokens_per_s"}  # every other metric is better when lower


def summary(study: optuna.Study) -> str:
    usable = [t.number for t in study.get_trials(deepcopy=False) if records.counts(t)]
    shown = ", ".join(map(str, usable[:20])) + (" ..." if len(usable) > 20 else "")
    return f"trained trials within the device limits: {shown or 'none yet'}"


def why_not(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a trial cannot be exported, or None when it can."""
    record = records.read(trial)
    if not record.finished:
        reason = record.fail_reason or record.requeued
        return f"trial {trial.number} did not finish (state {trial.state.name})" + (
            f": {reason}" if reason else ""
        )
    if not record.trained:
        return f"trial {trial.number} was never trained ({record.skipped or 'skipped'})"
    if not record.feasible:
        return f"trial {trial.number} is over the device limits"
    return None


def pick_trials(study: optuna.Study, selection: str) -> list[optuna.trial.FrozenTrial]:
    """The trials `trial=` names; NasError with what exists when it names none."""
    trials = study.get_trials(deepcopy=False)
    if selection == "pareto":
        front = front_members(trials, records.target(study))  # exactly what pareto.json lists
        if not front:
            raise NasError(f"study '{study.study_name}' has no Pareto front yet; {summary(study)}")
        return sorted(front, key=lambda t: records.read(t).metrics["bpb"])
    if selection.startswith("best:") or selection == "best":
        return [_best(study, trials, selection.partition(":")[2] or "bpb")]
    try:
        number = int(selection)
    except ValueError:
        raise NasError(
            f"trial={selection} is not a trial number, 'pareto' or 'best:METRIC'"
        ) from None
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        span = f"0-{max(by_number)}" if by_number else "none"
        raise NasError(
            f"study '{study.study_name}' has no trial {number} (trials: {span}); {summary(study)}"
        )
    reason = why_not(by_number[number])
    if reason:
        raise NasError(f"{reason}; {summary(study)}")
    return [by_number[number]]


def _best(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial], metric: str
) -> optuna.trial.FrozenTrial:
    usable = [records.read(t) for t in trials if records.counts(t)]
    if not usable:
        raise NasError(f"study '{study.study_name}' has no trained trial within the limits")
    known = sorted(k for k, v in usable[0].metrics.items() if _number(v))
    if metric not in known:
        raise NasError(
            f"unknown metric '{metric}' for trial=best:METRIC; use one of: " + ", ".join(known)
        )
    sign = -1.0 if metric in MAXIMISED else 1.0
    if metric == "bpb":  # the quality the front is judged on (top rung, or the target)
        judged = judge(trials, records.target(study))
        best_judged = min(judged, key=lambda j: (j.quality, j.record.number))
        return best_judged.trial
    best = min(usable, key=lambda r: (sign * r.metrics[metric], r.number))
    return next(t for t in trials if t.number == best.number)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
