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
- afterwards: fits bits per byte of the finished trials by ridge regression on log non-embedding
  parameters plus a one-hot code of every sampled parameter (generic, nothing tuned to a
  landscape), and proposes the candidate whose predicted point (optimistic by `optimism` residual
  standard deviations) adds the most hypervolume to the finished trials' front, under the study's
  reference point (`nas.hypervolume`).

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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from nas.arch import Candidate
from nas.hardware import DeployBudget, HardwareProfile
from nas.hypervolume import Reference, hypervolume, space_reference
from nas.objectives import CheapObjectives
from nas.study import is_feasible
from predictors.factory import latency_predictor, memory_predictor
from search_spaces import SearchSpace

RIDGE = 1.0  # one-hot codes are shrunk hard: a few finished trials, dozens of codes


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
        trials = study.get_trials(deepcopy=False)
        tried = {_key(t.params) for t in trials if t.params}
        pool: list[tuple[dict[str, Any], Candidate, tuple[float, float, float]]] = []
        for _ in range(self.n_candidates):
            probe = _RandomProbe(self._rng)
            candidate = self.space.suggest(probe)  # type: ignore[arg-type]  # duck-typed trial
            if _key(probe.params) in tried:
                continue
            metrics = self.cheap(candidate)
            if any(v > 0 for v in metrics.violations(self.deploy).values()):
                continue
            cost = (metrics.decode.mean, metrics.memory.mean, float(metrics.non_embedding_params))
            pool.append((probe.params, candidate, cost))
        if not pool:
            return {}  # nothing new and feasible drawn: random sampling decides
        done = [t for t in trials if _counted(t)]
        if len(done) < self.n_startup_trials:
            front = _cost_front([c for _, _, c in pool])
            return pool[front[self._rng.randint(len(front))]][0]
        return pool[self._best(study, done, pool)][0]

    def _best(
        self,
        study: optuna.Study,
        done: list[FrozenTrial],
        pool: list[tuple[dict[str, Any], Candidate, tuple[float, float, float]]],
    ) -> int:
        """Index of the pool candidate with the largest predicted hypervolume gain."""
        codes = sorted({(k, repr(v)) for t in done for k, v in t.params.items()})
        rows = [
            self._features(t.params, self.space.candidate_from_params(t.params), codes)
            for t in done
        ]
        x, y = np.array(rows), np.array([t.values[0] for t in done])
        coef, spread = _ridge(x, y)
        front = _non_dominated([tuple(t.values) for t in done])  # what the gain is measured on
        reference = self._reference(study, y)
        now = hypervolume(front, reference)
        gains = []
        for params, candidate, (decode, memory, _) in pool:
            bpb = float(self._features(params, candidate, codes) @ coef) - self.optimism * spread
            gains.append(hypervolume([*front, (bpb, decode, memory)], reference) - now)
        best = max(gains)
        ties = [i for i, g in enumerate(gains) if g >= best - 1e-12]
        return ties[self._rng.randint(len(ties))]

    def _features(
        self, params: dict[str, Any], candidate: Candidate, codes: list[tuple[str, str]]
    ) -> np.ndarray:
        onehot = [1.0 if k in params and repr(params[k]) == v else 0.0 for k, v in codes]
        return np.array([1.0, math.log(candidate.arch.non_embedding_params), *onehot])

    def _reference(self, study: optuna.Study, bpbs: np.ndarray) -> Reference:
        stored = study.user_attrs.get("hypervolume_reference")
        if stored:
            return Reference.from_dict(stored)
        if self._nadir is None:  # a study not run by nas.search: the same rule, bpb from data
            self._nadir = space_reference(self.space, self.cheap, self.deploy, 0.0)
        return Reference(float(bpbs.max()) * 1.05, self._nadir.decode_ms, self._nadir.memory_mb)


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _counted(trial: FrozenTrial) -> bool:
    """Finished within the device limits and trained: a point the surrogate can learn from."""
    return (
        trial.state == TrialState.COMPLETE
        and trial.values is not None
        and is_feasible(trial)
        and bool(trial.user_attrs.get("trained", True))
    )


def _non_dominated(points: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
    """The points no other one dominates (all objectives minimised)."""
    p = np.array(points)
    keep = [not np.any(np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1)) for i in range(len(p))]
    return [points[i] for i in range(len(points)) if keep[i]]


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


def cost_aware_sampler(
    *,
    hardware: DictConfig | dict[str, Any],
    search_space: DictConfig | dict[str, Any],
    caps: DictConfig | dict[str, Any],
    vocab_size: int,
    seed: int | None = None,
    **settings: Any,
) -> CostAwareSampler:
    """The sampler from the composed config (hydra_configs/sampler/cost_aware.yaml): the same
    hardware, search space and caps as the study, priced with the same predictors. The
    vocabulary is the budget's (the tokenizer trained at that size has it exactly)."""

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    profile = HardwareProfile.from_config(plain(hardware))
    space = instantiate(plain(search_space), vocab_size=int(vocab_size), caps=plain(caps))
    cheap = CheapObjectives(latency_predictor(profile), memory_predictor(profile))
    return CostAwareSampler(space=space, cheap=cheap, deploy=profile.deploy, seed=seed, **settings)
