"""The sampler contract, run against every sampler the project ships (hydra_configs/sampler/).

Two layers, as Optuna tests its own samplers:
- Optuna's shipped sampler test cases (`optuna.testing.pytest_samplers`): any distribution,
  conditional parameters, NaN objectives, several objectives;
- ours: in a real search (`proxy=params`, no training) every sampler proposes valid candidates of
  the search space, records their constraints, and a seed reproduces its proposals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase

from nas import records
from nas.config.compose import load_settings
from nas.objectives.cheap import CheapObjectives
from nas.samplers.factory import SamplerContext, build_sampler
from nas.search.run import build_space, run_search
from predictors import MemoryModel, RooflineLatency

CONFIGS = Path(__file__).resolve().parents[2] / "hydra_configs" / "sampler"
SAMPLERS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
SLOW = {"gp"}  # Gaussian-process fits take seconds per trial: Optuna's cases run it as slow


@functools.cache  # one composition per sampler, not one per test case
def _factory(name: str) -> Callable[[], optuna.samplers.BaseSampler]:
    # Optuna's cases sample their own distributions, which the cost-aware sampler hands to
    # random sampling; its pool of priced candidates only costs time there, so it is small.
    small = ["sampler.n_candidates=8"] if name == "cost_aware" else []
    settings = load_settings(["budget=smoke", f"sampler={name}", *small])
    space = build_space(settings, settings.budget.vocab_size)
    cheap = CheapObjectives(RooflineLatency(settings.hardware), MemoryModel(settings.hardware))
    context = SamplerContext(space, cheap, settings.hardware.deploy)
    return lambda: build_sampler(settings.sampler, 0, context=context)


PARAMS = [
    pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [], id=name)
    for name in SAMPLERS
]


class _EachSampler:
    """Optuna's test cases take their sampler from this fixture: ours, one after another."""

    @pytest.fixture(params=PARAMS)
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], optuna.samplers.BaseSampler]:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        return _factory(request.param)


class TestOptunaBasicContract(_EachSampler, BasicSamplerTestCase):
    """Optuna's own basic sampler tests, for each of our samplers."""


class TestOptunaMultiObjectiveContract(_EachSampler, MultiObjectiveSamplerTestCase):
    """Optuna's own multi-objective sampler tests, for each of our samplers."""


def test_every_shipped_sampler_is_tested() -> None:
    assert set(SAMPLERS) == {"cost_aware", "gp", "nsga2", "random", "tpe"}


def _search(name: str, tmp_path: Path, cache: Path, seed: int, n: int) -> optuna.Study:
    settings = load_settings(
        [
            "budget=smoke", "proxy=params", f"sampler={name}", f"seed={seed}", "quiet=true",
            f"runs_dir={tmp_path / str(seed)}", f"cache_dir={cache}", f"study.n_trials={n}",
        ]
    )  # fmt: skip
    run_search(settings)
    return optuna.load_study(study_name=settings.study.name, storage=settings.study.storage)


@pytest.mark.parametrize("name", PARAMS)
def test_a_real_search_gets_valid_candidates_and_a_seed_repeats_them(
    name: str, tmp_path: Path, shared_cache: Path
) -> None:
    n = 12 if name != "gp" else 11  # past every sampler's start-up trials (GP: 10)
    first = _search(name, tmp_path / "a", shared_cache, seed=3, n=n)
    trials = first.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * n
    space = build_space(load_settings(["budget=smoke"]), trials[0].user_attrs["arch"]["vocab_size"])
    for t in trials:
        record = records.read(t)
        assert space.candidate_from_params(t.params).arch.to_dict() == record.arch
        assert set(t.constraints) == {"memory_excess_mb", "decode_excess_ms"}
        assert record.trained
    again = _search(name, tmp_path / "b", shared_cache, seed=3, n=n)
    assert [t.params for t in again.trials] == [t.params for t in trials]


@pytest.mark.parametrize("name", PARAMS)
def test_every_sampler_runs_a_multi_fidelity_search(
    name: str, tmp_path: Path, shared_cache: Path, tiny: list[str]
) -> None:
    """With rungs, every sampler learns from rung 0's values (what every candidate has)."""
    settings = load_settings(
        ["budget=smoke", f"sampler={name}", "quiet=true", f"runs_dir={tmp_path}",
         f"cache_dir={shared_cache}", *tiny, "study.n_trials=4"]
    )  # fmt: skip
    run_search(settings)
    study = optuna.load_study(study_name=settings.study.name, storage=settings.study.storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for t in trials:
        record = records.read(t)
        assert t.values[0] == record.rungs[0]["bpb_seeds"][0]  # the value samplers see
    assert any(records.counts(t) for t in trials)  # someone reached the top rung
