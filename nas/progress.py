"""Live progress of a search: a tqdm bar with feasible count, front size and best bpb, or one log
line per trial in quiet mode (for batch jobs and log files)."""

from __future__ import annotations

import logging

import optuna
from tqdm.auto import tqdm

from nas.study import is_feasible

log = logging.getLogger("nas.search")


class SearchProgress:
    """An Optuna callback that reports after every finished trial."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = tqdm(total=total, unit="trial", desc="search", disable=quiet, dynamic_ncols=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        trained = [t for t in done if t.user_attrs.get("trained")]
        feasible = sum(1 for t in done if is_feasible(t))
        front = [t for t in study.best_trials if t.user_attrs.get("trained")]
        best = min((t.values[0] for t in trained), default=float("nan"))
        status = {
            "feasible": f"{feasible}/{len(done)}",
            "pareto": len(front),
            "best_bpb": f"{best:.3f}",
        }
        self.bar.set_postfix(status, refresh=False)
        self.bar.update(1)
        if self.quiet:
            what = trial.user_attrs.get("skipped") or trial.state.name.lower()
            if trial.values:
                what = f"bpb={trial.values[0]:.3f} decode={trial.values[1]:.2f}ms " + (
                    trial.user_attrs.get("skipped", "")
                )
            log.info("trial %d: %s | %s", trial.number, what.strip(), status)

    def close(self) -> None:
        self.bar.close()
