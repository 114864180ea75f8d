"""Optuna's multivariate TPE with its per-trial bookkeeping done once instead of once per group.

Hand-written because Optuna's `TPESampler(group=True)` repeats two pieces of work that give the
same answer every time, and on a long study they were most of the engine's time per trial:

- For each parameter group (our space has six: the shared parameters, kv-heads per head count,
  top-k per expert count) it splits *all* finished trials into good and bad ones: feasibility,
  then non-dominated sorting of the three objectives. Within one trial the trials and gamma are
  the same for every group, so the split is the same: it is computed once per trial here.
- Before each trial it re-reads every finished trial to find the parameter groups. The groups
  only change when a trial with new parameters finishes, so only trials not yet seen are read.

The samples are exactly `optuna.samplers.TPESampler`'s (`tests/test_fast_tpe.py` checks them
trial by trial). Both shortcuts use Optuna internals of the 5.x line (`pyproject.toml` pins
optuna < 6); if those change, that test fails rather than the search silently drifting.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe import sampler as _tpe
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

_splits = threading.local()  # the memo of the trial being sampled on this thread, if any
_split_trials = _tpe._split_trials


def _split_once(
    study: Study, trials: list[FrozenTrial], n_below: int
) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    memo: dict[Any, Any] | None = getattr(_splits, "memo", None)
    if memo is None:  # any other TPESampler: Optuna's own function, untouched
        return _split_trials(study, trials, n_below)
    key = (n_below, tuple(t._trial_id for t in trials), tuple(t.state for t in trials))
    if key not in memo:
        memo[key] = _split_trials(study, trials, n_below)
    return memo[key]


# The module-level name TPE's `_sample` calls; outside `FastTPESampler.sample_relative` it
# forwards every call unchanged.
_tpe._split_trials = _split_once


class _IncrementalGroups(_GroupDecomposedSearchSpace):
    """Parameter groups, reading each finished trial once: adding a trial's parameters again
    never changes the groups, so skipping seen trials gives the same groups."""

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._seen: set[int] = set()

    def calculate(self, study: Study, use_cache: bool = False) -> _SearchSpaceGroup:
        states = [TrialState.COMPLETE] + ([TrialState.PRUNED] if self._include_pruned else [])
        trials = study._get_trials(deepcopy=False, states=states, use_cache=use_cache)
        if self._study_id not in (None, study._study_id):
            raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple studies.")
        self._study_id = study._study_id
        for trial in trials:
            if trial._trial_id not in self._seen:
                self._seen.add(trial._trial_id)
                self._search_space.add_distributions(trial.distributions)
        groups = _SearchSpaceGroup()
        groups._search_spaces = [dict(space) for space in self._search_space.search_spaces]
        return groups


class FastTPESampler(TPESampler):
    """`optuna.samplers.TPESampler` (same arguments, same samples), cheaper per trial."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _IncrementalGroups(include_pruned=True)

    # TPESampler's own signature, so that `nas.samplers.factory` sees `seed` and `constant_liar`.
    __init__.__signature__ = inspect.signature(TPESampler.__init__)  # type: ignore[attr-defined]

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        _splits.memo = {}
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            _splits.memo = None
