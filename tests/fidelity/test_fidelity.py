"""nas.fidelity: rung arithmetic, the promotion order, seed noise, the target extrapolation,
and what the front judges."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from nas import records
from nas.fidelity.judge import judge
from nas.fidelity.noise import interaction_sd, within_noise
from nas.fidelity.promotion import order, promotable, promote
from nas.fidelity.rungs import Rungs
from nas.fidelity.target import extrapolate, fit, holdout_rms
from nas.objectives.hypervolume import Reference, hypervolume

REF = Reference(bpb=10.0, decode_ms=10.0, memory_mb=100.0)


def test_rungs_grow_by_eta_and_carrying_on_costs_less_than_retraining() -> None:
    rungs = Rungs(steps=60, eta=3, count=3, seeds=2, decay_fraction=0.2)
    assert [rungs.total(k) for k in range(3)] == [60, 180, 540]
    assert [rungs.decay(k) for k in range(3)] == [12, 36, 108]
    assert [rungs.trunk(k) for k in range(3)] == [48, 144, 432]
    assert rungs.ladder_cost(2) == 432 + 12 + 36 + 108 < 60 + 180 + 540
    assert sum(rungs.extra_cost(k) for k in range(3)) == rungs.ladder_cost(2)
    with pytest.raises(ValueError):
        Rungs(steps=60, decay_fraction=1.0)


def test_promotion_orders_by_non_dominated_layers_then_hypervolume_contribution() -> None:
    points = np.array(
        [
            [3.0, 5.0, 50.0],  # 0: front, middle
            [2.0, 8.0, 50.0],  # 1: front, best quality
            [4.0, 2.0, 50.0],  # 2: front, fastest
            [3.5, 6.0, 60.0],  # 3: dominated by 0 -> second layer
            [9.0, 9.0, 90.0],  # 4: dominated by everyone -> third layer
        ]
    )
    ranked = order(points, REF)
    assert set(ranked[:3]) == {0, 1, 2} and ranked[3:] == [3, 4]
    front = [0, 1, 2]
    alone = {
        i: hypervolume(points[front], REF) - hypervolume(points[[j for j in front if j != i]], REF)
        for i in front
    }
    assert ranked[:3] == sorted((0, 1, 2), key=lambda i: -alone[i])
    # the top floor(5/3) = 1 of five go on, as in ASHA; with six, two
    assert promote(ranked[0], points, REF, eta=3)[0]
    assert not promote(ranked[1], points, REF, eta=3)[0]
    assert promotable(points, REF, eta=3) == ranked[:1]
    six = np.vstack([points, [[9.5, 9.5, 95.0]]])
    assert promotable(six, REF, eta=3) == ranked[:2] and promote(ranked[1], six, REF, 3)[0]
    verdict, why = promote(4, points, REF, eta=3)
    assert not verdict and why.startswith("rank 5 of 5")
    # alone, or with fewer than eta peers, nobody goes on yet (a late promotion may follow)
    assert not promote(0, points[:1], REF, eta=3)[0] and not promote(0, points[:2], REF, 3)[0]
    # once no more candidates will come, the share is rounded up: ceil(5/3) = 2
    assert promotable(points, REF, eta=3, round_up=True) == ranked[:2]
    assert promote(0, points[:1], REF, eta=3, round_up=True)[0]


def test_interaction_noise_ignores_what_every_candidate_shares() -> None:
    arch = np.array([[3.0], [3.2], [3.4], [3.1]])
    seed_shift = np.array([[0.0, 0.3, -0.1]])
    assert interaction_sd(arch + seed_shift) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    noisy = arch + seed_shift + rng.normal(0, 0.02, size=(4, 3))
    assert 0.005 < interaction_sd(noisy) < 0.05
    assert math.isnan(interaction_sd([[1.0, 2.0]]))
    assert within_noise([3.00, 3.01], [3.01, 3.02], noise_sd=0.02)
    assert not within_noise([3.00, 3.01], [3.20, 3.21], noise_sd=0.02)


def test_the_curve_family_is_recovered_and_read_off_at_the_target() -> None:
    tokens = [6e4, 1.8e5, 5.4e5]
    truth = [(2.0, 40.0), (2.2, 20.0), (1.8, 80.0), (2.5, 5.0)]  # crossing curves
    curves = [[(t, c + a * t**-0.4) for t in tokens] for c, a in truth]
    family = fit(curves)
    assert family.beta == pytest.approx(0.4, abs=0.03)
    target = 64 * 6e4
    values, sd, _ = extrapolate(curves, target)
    expected = [c + a * target**-0.4 for c, a in truth]
    assert values == pytest.approx(expected, abs=2e-3)
    assert np.argsort(values).tolist() == np.argsort(expected).tolist()
    assert sd < 0.01  # a noise-free family predicts its own last rung
    noisy = [[(t, v + 0.01 * (-1) ** i) for i, (t, v) in enumerate(c)] for c in curves]
    assert holdout_rms(noisy, 0.4) > holdout_rms(curves, 0.4)


def _final(study: optuna.Study, rungs: list[dict], values, final: bool = True, sd=0.0):
    trial = study.ask()
    top = rungs[-1]
    metrics = {"bpb": top["bpb"], "bpb_sd": sd, "decode_ms": values[1], "memory_mb": values[2]}
    records._write(trial, {"trained": True, "final": final, "rungs": rungs, "metrics": metrics},
                   {"memory_excess_mb": -1.0})  # fmt: skip
    study.tell(trial, list(values))
    return study.get_trials()[-1]


def _rung(k: int, tokens: float, bpb: float) -> dict:
    return {"rung": k, "tokens": tokens, "bpb": bpb, "bpb_seeds": [bpb, bpb]}


def test_judge_never_compares_rungs_and_extrapolates_all_alike() -> None:
    study = optuna.create_study(directions=["minimize"] * 3)
    a = _final(study, [_rung(0, 1e3, 5.0), _rung(1, 3e3, 4.0)], (5.0, 1.0, 10.0))
    b = _final(study, [_rung(0, 1e3, 4.5), _rung(1, 3e3, 4.2)], (4.5, 2.0, 20.0))
    low = _final(study, [_rung(0, 1e3, 3.0)], (3.0, 0.5, 5.0), final=False)  # not promoted
    judged = judge([a, b, low])
    assert [j.record.number for j in judged] == [a.number, b.number]  # rung 0 never judged
    assert [j.quality for j in judged] == [4.0, 4.2] and judged[0].basis.startswith("rung 1")
    far = judge([a, b, low], {"tokens": 1e6})
    assert all(j.basis.startswith("extrapolated") for j in far)
    assert far[0].quality < 4.0 and far[1].quality < 4.2  # both still falling
    assert records.counts(a) and not records.counts(low) and records.learns(low)
