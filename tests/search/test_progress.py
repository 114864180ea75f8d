"""Search progress: counts, front, hypervolume and ETA per trial; log lines when quiet."""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pytest

from nas.objectives.hypervolume import Reference, hypervolume
from nas.search.progress import SearchProgress, format_seconds

REF = Reference(bpb=8.0, decode_ms=50.0, memory_mb=2000.0)


def add(study: optuna.Study, values: list[float], *, feasible: bool, trained: bool) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            values=values,
            constraints={"decode_excess_ms": -1.0 if feasible else 3.0},
            user_attrs={"trained": trained, **({} if trained else {"skipped": "over the limit"})},
        )
    )


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"] * 3)
    add(study, [4.0, 25.0, 1000.0], feasible=True, trained=True)
    add(study, [8.0, 53.0, 900.0], feasible=False, trained=False)
    add(study, [2.0, 37.5, 1000.0], feasible=True, trained=True)
    add(study, [5.0, 30.0, 1200.0], feasible=True, trained=True)  # dominated
    return study


def test_quiet_progress_logs_counts_front_hypervolume_and_eta(
    study: optuna.Study, caplog: pytest.LogCaptureFixture
) -> None:
    progress = SearchProgress(10, quiet=True, reference=REF)
    with caplog.at_level(logging.INFO, logger="nas.search"):
        for trial in study.trials:
            progress(study, trial)
    progress.close()
    assert len(caplog.records) == 4
    last = caplog.records[-1].getMessage()
    assert last.startswith("trial 3 (4/10): bpb=5.000 decode=30.00ms mem=1200MB")
    assert "feasible=3/4" in last
    assert "pareto=2" in last
    expected = hypervolume([(4.0, 25.0, 1000.0), (2.0, 37.5, 1000.0)], REF)
    assert f"hv={expected:.4g}" in last
    assert "eta=" in last and "s/trial=" in last
    assert "(over the limit)" in caplog.records[1].getMessage()


def test_snapshot_eta_counts_the_trials_left(study: optuna.Study) -> None:
    progress = SearchProgress(4, quiet=True, reference=REF)
    progress.done = 2
    progress.started -= 10.0  # as if two trials took ten seconds
    state = progress.snapshot(study)
    assert state.seconds_per_trial == pytest.approx(5.0, rel=0.05)
    assert state.eta_s == pytest.approx(10.0, rel=0.05)
    assert (state.finished, state.feasible, state.pareto) == (4, 3, 2)


def test_eta_never_passes_the_timeout(study: optuna.Study) -> None:
    progress = SearchProgress(100, quiet=True, reference=REF, timeout_s=30.0)
    progress.done = 1
    progress.started -= 10.0
    assert progress.snapshot(study).eta_s <= 20.0


def test_without_reference_no_hypervolume_is_shown(study: optuna.Study) -> None:
    progress = SearchProgress(4, quiet=True)
    progress.done = 1
    assert "hv" not in progress.snapshot(study).fields()


def test_a_bar_is_never_drawn_into_a_non_terminal() -> None:
    # Under pytest stderr is captured, as in a log file: the bar falls back to log lines.
    assert SearchProgress(3, quiet=False).quiet


def test_format_seconds() -> None:
    assert format_seconds(65) == "1:05"
    assert format_seconds(3725) == "1:02:05"
    assert format_seconds(float("nan")) == "?"


def test_incremental_counts_equal_a_full_recount() -> None:
    """The per-trial tally (each trial looked at once) agrees with recounting the whole study,
    also when trials arrive several at a time (other workers) and with duplicates."""
    from nas.objectives.hypervolume import study_hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["minimize"] * 3)
    progress = SearchProgress(200, quiet=True, reference=REF)
    for batch in range(40):
        for _ in range(int(rng.integers(1, 5))):
            values = [
                float(rng.uniform(1, 8)),
                float(rng.uniform(1, 50)),
                float(rng.uniform(1, 2e3)),
            ]
            if rng.random() < 0.1 and study.trials:  # a cached duplicate of an earlier trial
                earlier = study.trials[int(rng.integers(len(study.trials)))]
                if earlier.user_attrs["trained"]:
                    study.add_trial(
                        optuna.trial.create_trial(
                            values=earlier.values,
                            constraints=earlier.constraints,
                            user_attrs={"trained": True, "cached_from": earlier.number},
                        )
                    )
                    continue
            add(study, values, feasible=bool(rng.random() < 0.8), trained=True)
        state = progress.snapshot(study)
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert state.finished == len(trials)
        assert state.pareto == len(_front_by_brute_force(trials)), batch
        assert state.hypervolume == pytest.approx(study_hypervolume(trials, REF), rel=1e-12)
        feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
        assert state.feasible == len(feasible)
        assert state.best_bpb == min(t.values[0] for t in feasible)


def _front_by_brute_force(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Trained, feasible, not reused trials that no feasible trial dominates, pair by pair."""
    pool = [t for t in trials if all(v <= 0 for v in t.constraints.values())]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [
        t.number
        for t in pool
        if t.user_attrs["trained"]
        and "cached_from" not in t.user_attrs
        and not any(dominates(o.values, t.values) for o in pool)
    ]


def test_pareto_front_members_match_a_pairwise_check() -> None:
    from nas.objectives.pareto import front_members

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(1)
    study = optuna.create_study(directions=["minimize"] * 3)
    for _ in range(120):
        values = [float(rng.integers(1, 6)), float(rng.integers(1, 6)), float(rng.integers(1, 6))]
        add(study, values, feasible=bool(rng.random() < 0.8), trained=True)  # ties and duplicates
    trials = study.get_trials()
    assert [t.number for t in front_members(trials)] == _front_by_brute_force(trials)
