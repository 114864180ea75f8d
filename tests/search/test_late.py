"""Late promotions (nas.search.late): which stayed candidate goes on, once, and who stands for it.

Studies here are real Optuna studies (in memory) holding finished trials as `nas.records` stores
them; the search itself queues and runs late promotions in tests/search/test_ladder.py.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas import records
from nas.fidelity.rungs import Rungs
from nas.search import late

RUNGS = Rungs(steps=10, eta=3.0, count=3, seeds=2)
REFERENCE = {"bpb": 10.0, "decode_ms": 10.0, "memory_mb": 100.0}


def _entry(rung: int, bpb: float, decode: float = 1.0, memory: float = 10.0) -> dict[str, Any]:
    return {"rung": rung, "bpb_seeds": [bpb], "decode_ms": decode, "memory_mb": memory,
            "seconds": 1.0, "steps": RUNGS.total(rung), "seeds": [0]}  # fmt: skip


def _study() -> optuna.Study:
    study = optuna.create_study(directions=["minimize"] * 3)
    records.store_reference(study, REFERENCE)
    return study


def _add(
    study: optuna.Study,
    name: str,
    bpbs: list[float],
    promotion: str,
    state: TrialState = TrialState.COMPLETE,
    **attrs: Any,
) -> int:
    """A trained candidate `name` measured at rungs 0..len(bpbs)-1 (same prices for all)."""
    rungs = [_entry(k, b) for k, b in enumerate(bpbs)]
    user_attrs = {"trained": True, "rungs": rungs, "rung": len(bpbs) - 1,
                  "final": len(bpbs) == RUNGS.count, "promotion": promotion, **attrs}  # fmt: skip
    done = state == TrialState.COMPLETE
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            values=[bpbs[0], 1.0, 10.0] if done else None,
            params={"name": name},
            distributions={"name": CategoricalDistribution([name])},
            user_attrs=user_attrs,
        )
    )
    return study.trials[-1].number


STAYED = "stayed at rung {}: rank 1 of 1 (not in the top 0 = floor(1/3); may go on later)"


def _queued(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def test_a_candidate_that_stayed_goes_on_once_it_is_in_its_rungs_top_share() -> None:
    study = _study()
    first = _add(study, "a", [3.0], STAYED.format(0))  # alone when it finished
    assert late.queue_late_promotion(study, RUNGS) is None  # still alone: floor(1/3) = 0
    _add(study, "b", [4.0], "stayed at rung 0: rank 2 of 2 (...)")
    _add(study, "c", [5.0], "stayed at rung 0: rank 3 of 3 (...)")
    assert late.queue_late_promotion(study, RUNGS) == first  # best of three: floor(3/3) = 1
    (queued,) = _queued(study)
    assert queued.system_attrs["fixed_params"] == {"name": "a"}  # its candidate, as sampled
    assert records.continues(queued) == first
    assert records.carried_rungs(queued) == records.read(study.trials[first]).rungs
    assert late.queue_late_promotion(study, RUNGS) is None  # queued once, nobody else is top


def test_the_highest_rung_goes_first_and_what_went_on_or_met_the_clock_does_not() -> None:
    study = _study()
    went_on = _add(study, "a", [1.0, 2.0], "stayed at rung 1: rank 1 of 1 (...)")
    _add(study, "b", [2.0], "promoted from rung 0: ... then died")  # promoted: not queued again
    clock = _add(study, "c", [2.5], f"stayed at rung 0: {late.CLOCK}")
    _add(study, "d", [4.0], STAYED.format(0))
    _add(study, "e", [4.5], STAYED.format(0))
    _add(study, "f", [5.0, 3.0], "stayed at rung 1: rank 2 of 2 (...)")
    _add(study, "g", [6.0, 4.0], "stayed at rung 1: rank 3 of 3 (...)")
    # rung 1 holds a, f, g: a is its top 1; rung 0's top 2 (a, b) went on already
    assert late.queue_late_promotion(study, RUNGS) == went_on
    assert late.queue_late_promotion(study, RUNGS) is None
    _add(study, "h", [6.0], STAYED.format(0))
    _add(study, "i", [6.5], STAYED.format(0))
    # rung 0's top 3 of 9: a and b went on, and the clock stopped c
    assert late.queue_late_promotion(study, RUNGS) is None
    assert clock not in {records.continues(t) for t in _queued(study)}


def test_once_no_candidate_will_come_the_share_is_rounded_up() -> None:
    study = _study()
    alone = _add(study, "a", [3.0], STAYED.format(0))
    assert late.queue_late_promotion(study, RUNGS) is None  # floor(1/3): waits for peers
    assert late.queue_late_promotion(study, RUNGS, round_up=True) == alone  # ceil(1/3)


def test_a_climb_that_cannot_end_before_the_deadline_is_not_queued() -> None:
    study = _study()
    for name, bpb in [("a", 3.0), ("b", 4.0), ("c", 5.0)]:
        _add(study, name, [bpb], STAYED.format(0))
    assert late.queue_late_promotion(study, RUNGS, deadline=time.time() - 1.0) is None
    # each rung-0 result took 1 s for 8 steps: the climb (ladder + second seed) is seconds long
    assert late.queue_late_promotion(study, RUNGS, deadline=time.time() + 3600) is not None


def test_a_continuation_stands_for_its_candidate_once_it_runs() -> None:
    study = _study()
    origin = _add(study, "a", [3.0], STAYED.format(0))
    _add(study, "b", [4.0], STAYED.format(0))
    _add(study, "c", [5.0], STAYED.format(0))
    late.queue_late_promotion(study, RUNGS)
    trials = study.get_trials(deepcopy=False)
    _, who = late.field(trials, 0)
    assert origin in [t.number for t in who]  # queued only: the origin still holds the place
    continuing = _add(study, "a", [3.0, 2.0], "promoted ...", continues=origin)
    _, who = late.field(study.get_trials(deepcopy=False), 0)
    assert [t.number for t in who].count(continuing) == 1 and origin not in {t.number for t in who}
    assert late.queue_late_promotion(study, RUNGS) is None  # continued: never queued twice


@pytest.mark.parametrize("earlier_state", [TrialState.WAITING, TrialState.RUNNING])
def test_of_two_copies_of_one_late_promotion_the_later_stands_down(
    earlier_state: TrialState,
) -> None:
    study = _study()
    origin = _add(study, "a", [3.0], STAYED.format(0))
    first = _add(study, "a", [3.0], "", state=earlier_state, continues=origin)
    second = _add(study, "a", [3.0], "", state=TrialState.RUNNING, continues=origin)
    trials = study.get_trials(deepcopy=False)
    assert late.standing_down(study, trials[second]) == first
    assert late.standing_down(study, trials[first]) is None
    assert late.standing_down(study, trials[origin]) is None  # not a continuation
