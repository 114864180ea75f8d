"""Hypervolume: the normalised volume the feasible, trained trials dominate under the reference."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from nas.config.compose import load_settings
from nas.hardware import HardwareProfile
from nas.objectives.cheap import CheapObjectives
from nas.objectives.hypervolume import (
    Reference,
    hypervolume,
    hypervolume_history,
    space_nadir,
    space_reference,
)
from nas.records import counts as counted
from nas.search.run import build_space
from predictors import MemoryModel, RooflineLatency

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


# The reference point of new studies: the search space's own nadir (see its module doc).


def priced_space(budget: str) -> tuple[Any, CheapObjectives, HardwareProfile]:
    cfg = load_settings([f"budget={budget}", "hardware=pixel8"])
    hardware = cfg.hardware
    cheap = CheapObjectives(RooflineLatency(hardware), MemoryModel(hardware))
    return build_space(cfg, int(cfg.budget.vocab_size)), cheap, hardware


def sampled(space: Any, n: int) -> list[Any]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return out


def test_space_nadir_is_the_largest_cost_of_any_candidate() -> None:
    space, cheap, _ = priced_space("smoke")
    candidates = sampled(space, 300)
    for quantity in ("decode", "memory"):
        nadir = space_nadir(space, lambda c, q=quantity: getattr(cheap(c), q).mean)
        largest = max(getattr(cheap(c), quantity).mean for c in candidates)
        assert nadir >= largest - 1e-9  # no sampled candidate beyond it
        assert nadir <= largest * 1.05  # and not an overestimate: the smoke space is small


def test_latency_and_memory_move_the_hypervolume() -> None:
    # Same bpb, the space's fastest vs slowest (and smallest vs largest) candidate: with the
    # device limits as reference both differed by < 2% at budget=cpu; they must now count.
    space, cheap, hardware = priced_space("cpu")
    reference = space_reference(space, cheap, hardware.deploy, uniform_bpb=4.0)
    metrics = [cheap(c) for c in sampled(space, 200)]
    # The costly end is the space's own nadir: 200 random draws rarely land on it now that
    # compression methods are sampled too.
    fast, slow = (
        min(m.decode.mean for m in metrics),
        space_nadir(space, lambda c: cheap(c).decode.mean),
    )
    small, large = (
        min(m.memory.mean for m in metrics),
        space_nadir(space, lambda c: cheap(c).memory.mean),
    )
    assert hypervolume([(3.0, fast, 80.0)], reference) > 2 * hypervolume(
        [(3.0, slow, 80.0)], reference
    )
    assert hypervolume([(3.0, 0.8, small)], reference) > 2 * hypervolume(
        [(3.0, 0.8, large)], reference
    )
    # A front of a fast model and a better, slower one covers more than either alone.
    both = hypervolume([(3.0, fast, small), (2.8, slow, large)], reference)
    assert both > hypervolume([(2.8, slow, large)], reference)
    assert both > hypervolume([(3.0, fast, small)], reference)


def test_reference_never_exceeds_the_device_limits() -> None:
    space, cheap, hardware = priced_space("gpu")  # its largest models are over the Pixel 8's
    reference = space_reference(space, cheap, hardware.deploy, uniform_bpb=4.0)
    assert reference.decode_ms == hardware.deploy.max_decode_ms
    assert reference.memory_mb == hardware.deploy.max_memory_mb
    space, cheap, hardware = priced_space("smoke")
    reference = space_reference(space, cheap, hardware.deploy, uniform_bpb=4.0)
    assert reference.decode_ms < hardware.deploy.max_decode_ms
    assert reference.memory_mb < hardware.deploy.max_memory_mb
