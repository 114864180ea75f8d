"""`FastTPESampler` proposes exactly what Optuna's `TPESampler` proposes, trial by trial."""

from __future__ import annotations

import optuna
import pytest

from nas.config.compose import load_settings
from nas.samplers.fast_tpe import FastTPESampler
from nas.search.run import build_space


def _run(sampler: optuna.samplers.BaseSampler, trials: int) -> list[dict]:
    """A 3-objective study on the real smoke space with conditional parameters, infeasible
    trials (constraints) and pruned ones, as the search has."""
    cfg = load_settings(["budget=smoke"])
    space = build_space(cfg, 256)
    study = optuna.create_study(directions=["minimize"] * 3, sampler=sampler)
    for number in range(trials):
        trial = study.ask()
        candidate = space.suggest(trial)
        arch = candidate.arch
        size = float(arch.non_embedding_params)
        trial.set_constraint("memory_excess_mb", size / 2e4 - 8.0)
        if number % 11 == 5:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        values = [
            3.0 - 0.1 * arch.n_layers + 1e-6 * size,
            float(arch.n_layers * arch.d_model),
            size / 1e3 + 1.0 * (candidate.compression.weight_bits or 16),
        ]
        study.tell(trial, values)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("constant_liar", [False, True])
def test_fast_tpe_samples_what_tpe_samples(constant_liar: bool) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {
        "multivariate": True,
        "group": True,
        "n_startup_trials": 5,
        "seed": 3,
        "constant_liar": constant_liar,
    }
    expected = _run(optuna.samplers.TPESampler(**options), 40)
    got = _run(FastTPESampler(**options), 40)
    assert got == expected
    assert len({str(p) for p in got}) > 10  # a real search, not one repeated candidate


def test_make_sampler_seeds_it_and_drops_the_constant_liar_in_one_process() -> None:
    from nas.samplers.factory import build_sampler

    node = {"_target_": "nas.samplers.fast_tpe.FastTPESampler", "multivariate": True}
    one = build_sampler(node, 7, parallel=False)
    assert isinstance(one, FastTPESampler) and not one._constant_liar
    assert build_sampler(node, 7, parallel=True)._constant_liar
    assert one._rng.rng.random() == build_sampler(node, 7)._rng.rng.random()  # seeded
