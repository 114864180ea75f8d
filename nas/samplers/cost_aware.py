"""`sampler=cost_aware`: a sampler that prices candidates before proposing one.

Hand-written, not an Optuna sampler, because no Optuna sampler can use objectives that are known
*before* a trial runs: here latency, memory and parameter counts cost a predictor call, while the
quality objective costs a training run. TPE, NSGA-II and GP learn the cheap objectives from
finished trials as if each one cost a training run, and propose candidates over the device's
limits (wasted trials) or dominated on cost by a same-sized model.

Each trial, the sampler draws `n_candidates` random candidates from the search space, prices them
with the study's cheap predictors, drops those over the device limits and those already tried,
and then:
- for the first `n_startup_trials`: proposes a random candidate among those that no other
  candidate beats on decode latency, memory *and* non-embedding parameters (the
  LiteTransformerSearch prior: more non-embedding parameters at equal cost is better quality);
- afterwards: fits rung-0 bits per byte (the trials' values, which every candidate has, also in
  a multi-fidelity study) of the finished trials by ridge regression on log non-embedding
  parameters plus a one-hot code of every sampled parameter (generic, nothing tuned to a
  landscape), and proposes the candidate whose predicted point (optimistic by `optimism` residual
  standard deviations) adds the most hypervolume to the finished trials' front, under the study's
  reference point (`nas.objectives.hypervolume`).

It is a real `optuna.samplers.BaseSampler`: parameters are handed out one `suggest_*` call at a
time, a parameter outside the plan (another space's, or one the plan lacks) falls back to random
sampling, and a seed makes a study reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from nas import records
from nas.arch import Candidate
from nas.hardware import DeployBudget
from nas.objectives.cheap import CheapObjectives
from nas.objectives.hypervolume import Reference, hypervolume, space_reference
from nas.objectives.pareto import IncrementalFront
from search_spaces import SearchSpace

RIDGE = 1.0  # one-hot codes are shrunk hard: a few finished trials, dozens of codes
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_UNFINISHED = (TrialState.RUNNING, TrialState.WAITING)


class _RandomProbe:
    """Stands in for an Optuna trial: draws every categorical choice uniformly, recording it."""

    def __init__(self, rng: np.random.RandomState) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.params[name] = choices[self.rng.randint(len(choices))]
        return self.params[name]


class CostAwareSampler(BaseSampler):
    """Proposes the candidate of a priced random pool that should add the most hypervolume.

    Args:
        space: the study's search space (categorical parameters only).
        cheap: the study's cheap objectives (latency and memory predictors).
        deploy: the device limits; candidates over them are never proposed.
        n_startup_trials: trials proposed from the parameter-count prior alone.
        n_candidates: random candidates priced per trial.
        optimism: residual standard deviations subtracted from predicted bits per byte.
        seed: makes the proposals reproducible.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        cheap: CheapObjectives,
        deploy: DeployBudget,
        n_startup_trials: int = 5,
        n_candidates: int = 256,
        optimism: float = 0.5,
        seed: int | None = None,
    ) -> None:
        self.space = space
        self.cheap = cheap
        self.deploy = deploy
        self.n_startup_trials = n_startup_trials
        self.n_candidates = n_candidates
        self.optimism = optimism
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._plans: dict[int, dict[str, Any]] = {}  # trial id -> the parameters proposed
        self._nadir: Reference | None = None
        # What finished trials taught, read once each (`_catch_up`), and memoised prices.
        self._seen: set[int] = set()
        self._tried: set[tuple[tuple[str, str], ...]] = set()
        self._done: list[tuple[set[tuple[str, str]], float, float]] = []  # codes, log params, bpb
        self._front = IncrementalFront()
        self._prices: dict[Any, tuple[Candidate, tuple[float, float, float]] | None] = {}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # the plan is handed out per parameter, in sample_independent

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if trial._trial_id not in self._plans:
            self._plans[trial._trial_id] = self._plan(study)
        value = self._plans[trial._trial_id].get(param_name)
        if (
            isinstance(param_distribution, CategoricalDistribution)
            and param_name in self._plans[trial._trial_id]
            and value in param_distribution.choices
        ):
            return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._plans.pop(trial._trial_id, None)

    # -- the plan -----------------------------------------------------------------------------

    def _plan(self, study: optuna.Study) -> dict[str, Any]:
        # The study's per-trial snapshot of its trials (one storage read, shared with the
        # objective's cache lookup).
        trials = study._get_trials(deepcopy=False, use_cache=True)
        self._catch_up(trials)
        unfinished = [t for t in trials if t.state in _UNFINISHED and t.params]
        tried = self._tried | {_key(t.params) for t in unfinished}
        pool: list[tuple[dict[str, Any], Candidate, tuple[float, float, float]]] = []
        for _ in range(self.n_candidates):
            probe = _RandomProbe(self._rng)
            candidate = self.space.suggest(probe)  # type: ignore[arg-type]  # duck-typed trial
            key = _key(probe.params)
            if key in tried:
                continue
            priced = self._priced(key, candidate)
            if priced is not None:
                pool.append((probe.params, *priced))
        if not pool:
            return {}  # nothing new and feasible drawn: random sampling decides
        if len(self._done) < self.n_startup_trials:
            front = _cost_front([c for _, _, c in pool])
            return pool[front[self._rng.randint(len(front))]][0]
        return pool[self._best(study, pool)][0]

    def _catch_up(self, trials: list[FrozenTrial]) -> None:
        """Read the trials finished since the last proposal, once each: a finished trial never
        changes, and re-reading a thousand of them per proposal was most of its time."""
        for t in trials:
            if t.state not in _FINISHED or t._trial_id in self._seen:
                continue
            self._seen.add(t._trial_id)
            if t.params:
                self._tried.add(_key(t.params))
            # Rung 0's values, which every candidate has; a late promotion repeats its
            # candidate's and is learnt once.
            if records.learns(t) and records.continues(t) is None:
                try:
                    arch = self.space.candidate_from_params(t.params).arch
                except ValueError:  # parameters of another space: nothing to learn from
                    continue
                log_params = math.log(arch.non_embedding_params)
                self._done.append((_codes(t.params), log_params, t.values[0]))
                self._front.add(t.values, t)

    def _priced(
        self, key: tuple[tuple[str, str], ...], candidate: Candidate
    ) -> tuple[Candidate, tuple[float, float, float]] | None:
        """The candidate and its (decode, memory, non-embedding params), or None when it is over
        a device limit; memoised, since random pools draw the same candidates again."""
        if key not in self._prices:
            metrics = self.cheap(candidate)
            over = any(v > 0 for v in metrics.violations(self.deploy).values())
            cost = (metrics.decode.mean, metrics.memory.mean, float(metrics.non_embedding_params))
            self._prices[key] = None if over else (candidate, cost)
        return self._prices[key]

    def _best(
        self,
        study: optuna.Study,
        pool: list[tuple[dict[str, Any], Candidate, tuple[float, float, float]]],
    ) -> int:
        """Index of the pool candidate with the largest predicted hypervolume gain."""
        codes = sorted(set().union(*(c for c, _, _ in self._done)))
        x = _design([(c, log_params) for c, log_params, _ in self._done], codes)
        y = np.array([bpb for _, _, bpb in self._done])
        coef, spread = _ridge(x, y)
        reference = self._reference(study, y)
        pool_x = _design(
            [(_codes(p), math.log(c.arch.non_embedding_params)) for p, c, _ in pool], codes
        )
        bpb = pool_x @ coef - self.optimism * spread
        points = np.array([(b, d, m) for b, (_, _, (d, m, _)) in zip(bpb, pool, strict=True)])
        gains = hypervolume_gains(self._front.points, points, reference)
        best = max(gains)
        ties = [i for i, g in enumerate(gains) if g >= best - 1e-12]
        return ties[self._rng.randint(len(ties))]

    def _reference(self, study: optuna.Study, bpbs: np.ndarray) -> Reference:
        stored = records.reference(study)
        if stored:
            return Reference.from_dict(stored)
        if self._nadir is None:  # a study not run by nas.search: the same rule, bpb from data
            self._nadir = space_reference(self.space, self.cheap, self.deploy, 0.0)
        return Reference(float(bpbs.max()) * 1.05, self._nadir.decode_ms, self._nadir.memory_mb)


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_codes(params)))


def _codes(params: dict[str, Any]) -> set[tuple[str, str]]:
    """A candidate's parameter values as (name, repr) codes: its one-hot features and its key."""
    return {(k, repr(v)) for k, v in params.items()}


def _design(
    rows: list[tuple[set[tuple[str, str]], float]], codes: list[tuple[str, str]]
) -> np.ndarray:
    """Ridge features of (codes, log non-embedding params) rows: intercept, log params, then a
    one-hot column per code in `codes` (a value no finished trial had gets no column)."""
    column = {code: 2 + i for i, code in enumerate(codes)}
    x = np.zeros((len(rows), 2 + len(codes)))
    x[:, 0] = 1.0
    for row, (row_codes, log_params) in enumerate(rows):
        x[row, 1] = log_params
        x[row, [column[c] for c in row_codes if c in column]] = 1.0
    return x


def hypervolume_gains(front: np.ndarray, points: np.ndarray, reference: Reference) -> list[float]:
    """Hypervolume each point would add to `front`, one at a time. A point that a front point
    dominates (or equals) adds exactly nothing and costs no hypervolume computation: on a long
    study that is almost every candidate."""
    if len(front) == 0:
        return [hypervolume([p], reference) for p in points]
    now = hypervolume(front, reference)
    covered = np.all(front[None, :, :] <= points[:, None, :], axis=2).any(axis=1)
    return [
        0.0 if cover else hypervolume([*front, p], reference) - now
        for p, cover in zip(points, covered, strict=True)
    ]


def _cost_front(costs: list[tuple[float, float, float]]) -> list[int]:
    """Indices of the candidates no other one beats on decode, memory and parameters at once."""
    c = np.array(costs)
    keys = np.stack([c[:, 0], c[:, 1], -c[:, 2]], axis=1)
    return [
        i
        for i in range(len(keys))
        if not np.any(np.all(keys <= keys[i], axis=1) & np.any(keys < keys[i], axis=1))
    ]


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge coefficients (intercept and log-parameter slope not shrunk) and residual std."""
    penalty = RIDGE * np.eye(x.shape[1])
    penalty[0, 0] = penalty[1, 1] = 0.0
    coef = np.linalg.lstsq(x.T @ x + penalty + 1e-9 * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]
    residual = y - x @ coef
    return coef, float(np.sqrt(np.mean(residual**2)))
