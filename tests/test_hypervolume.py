"""Hypervolume: the normalised volume the feasible, trained trials dominate under the reference."""

from __future__ import annotations

import optuna
import pytest

from nas.hypervolume import Reference, counted, hypervolume, hypervolume_history

REF = Reference(bpb=8.0, decode_ms=50.0, memory_mb=2000.0)


def trial(
    number: int, values: tuple[float, float, float], *, feasible: bool = True, trained: bool = True
) -> optuna.trial.FrozenTrial:
    frozen = optuna.trial.create_trial(
        values=list(values),
        constraints={"memory_excess_mb": -1.0 if feasible else 5.0},
        user_attrs={"trained": trained},
    )
    frozen.number = number
    return frozen


def test_single_point_at_half_the_reference_dominates_an_eighth() -> None:
    assert hypervolume([(4.0, 25.0, 1000.0)], REF) == pytest.approx(0.125)


def test_two_points_count_their_union_once() -> None:
    # Boxes 0.5*0.5*0.5 and 0.75*0.25*0.5 overlap in 0.5*0.25*0.5.
    points = [(4.0, 25.0, 1000.0), (2.0, 37.5, 1000.0)]
    assert hypervolume(points, REF) == pytest.approx(0.125 + 0.09375 - 0.0625)


def test_points_outside_the_reference_box_add_nothing() -> None:
    assert hypervolume([(9.0, 1.0, 1.0)], REF) == 0.0
    assert hypervolume([], REF) == 0.0
    assert hypervolume([(9.0, 1.0, 1.0), (4.0, 25.0, 1000.0)], REF) == pytest.approx(0.125)


def test_only_feasible_trained_trials_count() -> None:
    assert counted(trial(0, (4.0, 25.0, 1000.0)))
    assert not counted(trial(1, (4.0, 25.0, 1000.0), feasible=False))
    assert not counted(trial(2, (4.0, 25.0, 1000.0), trained=False))


def test_history_grows_only_with_counted_non_dominated_trials() -> None:
    trials = [
        trial(0, (6.0, 40.0, 1600.0)),
        trial(1, (1.0, 1.0, 1.0), feasible=False),  # would dominate everything, but infeasible
        trial(2, (4.0, 25.0, 1000.0)),
        trial(3, (5.0, 30.0, 1200.0)),  # dominated by trial 2: no change
        trial(4, (2.0, 37.5, 1000.0)),
    ]
    history = hypervolume_history(trials, REF)
    assert [n for n, _ in history] == [0, 1, 2, 3, 4]
    values = [v for _, v in history]
    assert values[0] == pytest.approx(0.25 * 0.2 * 0.2)
    assert values[1] == values[0]
    assert values[2] == pytest.approx(0.125)
    assert values[3] == values[2]
    assert values[4] == pytest.approx(0.15625)


def test_reference_round_trips_through_a_dict() -> None:
    assert Reference.from_dict(REF.to_dict()) == REF
