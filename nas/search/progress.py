"""Live progress of a search: a tqdm bar (trials done / total, feasible count, Pareto size,
hypervolume, seconds per trial, ETA), or one log line per trial in quiet mode, for batch jobs and
log files. Quiet mode is also chosen when stderr is not a terminal: a redrawn bar in a log file
is noise. Log lines go through `logging` (logger `nas.search`), so the application's logging
configuration (format, level, handlers) decides where they land.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import optuna
from tqdm.auto import tqdm

from nas import records
from nas.fidelity.judge import judge
from nas.objectives.hypervolume import Reference, hypervolume
from nas.objectives.pareto import non_dominated

log = logging.getLogger("nas.search")


@dataclass(frozen=True)
class Snapshot:
    """Where a search stands after a trial."""

    done: int  # trials finished in this run
    total: int  # trials this run will add
    finished: int  # finished trials in the study (earlier runs included)
    feasible: int
    pareto: int  # top-rung, non-dominated trials (pareto.json's members)
    hypervolume: float | None  # None without a reference point
    best_bpb: float  # the best judged quality at the top rung
    seconds_per_trial: float
    eta_s: float
    rungs: tuple[int, ...] = ()  # trained candidates that reached rung 0, 1, ...

    def fields(self) -> dict[str, str]:
        out = {"feasible": f"{self.feasible}/{self.finished}"}
        if len(self.rungs) > 1:
            out["rungs"] = "/".join(map(str, self.rungs))
        out["pareto"] = str(self.pareto)
        out["best_bpb"] = f"{self.best_bpb:.3f}"
        if self.hypervolume is not None:
            out["hv"] = f"{self.hypervolume:.4g}"
        out["s/trial"] = f"{self.seconds_per_trial:.1f}"
        out["eta"] = format_seconds(self.eta_s)
        return out


class _Tally:
    """Counts of the finished trials seen so far; each trial is read once, and the front and
    hypervolume are judged again only when a top-rung trial arrives."""

    def __init__(self, reference: Reference | None, target: dict[str, Any] | None) -> None:
        self.reference = reference
        self.target = target
        self.seen: set[int] = set()
        self.feasible = 0
        self.reached: list[int] = []  # trained candidates per highest rung reached
        self.counted: list[optuna.trial.FrozenTrial] = []  # top-rung: what the front judges
        self.pareto = 0
        self.best_bpb = float("nan")
        self.hypervolume: float | None = None if reference is None else 0.0

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        grew = False
        for trial in trials:
            if trial.number in self.seen or trial.values is None:
                continue
            self.seen.add(trial.number)
            if not records.is_feasible(trial):
                continue
            self.feasible += 1
            record = records.read(trial)
            if record.trained:
                top = record.rungs[-1]["rung"] if record.rungs else 0
                self.reached += [0] * (top + 1 - len(self.reached))
                for rung in range(self._first_new_rung(record, trials), top + 1):
                    self.reached[rung] += 1
            if record.counts:
                self.counted.append(trial)
                grew = True
        if grew:
            judged = judge(self.counted, self.target)
            self.pareto = sum(1 for j in non_dominated(judged) if j.record.stands_for_itself)
            self.best_bpb = min(j.quality for j in judged)
            if self.reference is not None:
                self.hypervolume = hypervolume([j.point for j in judged], self.reference)

    @staticmethod
    def _first_new_rung(record: records.TrialRecord, trials: list[optuna.trial.FrozenTrial]) -> int:
        """0, or for a late promotion the rung above where its candidate stayed (counted then)."""
        origin = next((t for t in trials if t.number == record.continues), None)
        return 0 if origin is None else records.read(origin).rung + 1


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class SearchProgress:
    """An Optuna callback that reports after every finished trial.

    Args:
        total: trials this run adds (the bar's length).
        quiet: log lines instead of a bar.
        reference: the hypervolume reference point; without one no hypervolume is shown.
        timeout_s: the run's timeout; the ETA never goes past it.
        target: the study's target (`nas.records.target`), which the front is judged at.
    """

    def __init__(
        self,
        total: int,
        *,
        quiet: bool,
        reference: Reference | None = None,
        timeout_s: float | None = None,
        target: dict[str, Any] | None = None,
    ) -> None:
        self.quiet = quiet or not _is_terminal()
        self.total = total
        self.reference = reference
        self.timeout_s = timeout_s
        self.started = time.monotonic()
        self.done = 0
        self.tally = _Tally(reference, target)
        self.bar = tqdm(
            total=total, unit="trial", desc="search", disable=self.quiet, dynamic_ncols=True
        )

    def snapshot(self, study: optuna.Study) -> Snapshot:
        """Count what the study holds now; `done` is this run's finished trials."""
        tally = self.tally
        tally.update(study)  # only trials not seen before: other workers' included
        elapsed = time.monotonic() - self.started
        per_trial = elapsed / self.done if self.done else float("nan")
        eta = max(0, self.total - self.done) * per_trial if self.done else float("nan")
        if self.timeout_s is not None:
            eta = min(eta, max(0.0, self.timeout_s - elapsed))
        return Snapshot(
            done=self.done,
            total=self.total,
            finished=len(tally.seen),
            feasible=tally.feasible,
            pareto=tally.pareto,
            hypervolume=tally.hypervolume,
            best_bpb=tally.best_bpb,
            seconds_per_trial=per_trial,
            eta_s=eta,
            rungs=tuple(tally.reached),
        )

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.done += 1
        state = self.snapshot(study)
        status = state.fields()
        self.bar.set_postfix(status, refresh=False)
        self.bar.update(1)
        if self.quiet:
            log.info(
                "trial %d (%d/%d): %s | %s",
                trial.number,
                state.done,
                state.total,
                _describe(trial),
                " ".join(f"{k}={v}" for k, v in status.items()),
            )

    def extend(self, more: int) -> None:
        """`more` trials join this run (late promotions run after its last sampled candidate)."""
        self.total += more
        self.bar.total = self.total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _describe(trial: optuna.trial.FrozenTrial) -> str:
    if not trial.values:
        return trial.state.name.lower()
    record = records.read(trial)
    _, decode_ms, memory_mb = trial.values
    bpb = record.metrics.get("bpb", trial.values[0])
    where = f"@rung{record.rungs[-1]['rung']}" if len(record.rungs) > 1 else ""
    what = f"bpb={bpb:.3f}{where} decode={decode_ms:.2f}ms mem={memory_mb:.0f}MB"
    return f"{what} ({record.skipped})" if record.skipped else what


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
