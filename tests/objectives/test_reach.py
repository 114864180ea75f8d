"""Whether a study's candidates come near the device's limits (nas.objectives.reach)."""

from __future__ import annotations

import optuna
import pytest

from nas.objectives.reach import OUT_OF_REACH_SHARE, device_reach


def _trial(decode_ms: float, memory_mb: float, state=optuna.trial.TrialState.COMPLETE):
    values = [2.0, decode_ms, memory_mb] if state == optuna.trial.TrialState.COMPLETE else None
    return optuna.trial.create_trial(
        state=state,
        values=values,
        distributions={},
        params={},
        user_attrs={"metrics": {"decode_ms": decode_ms, "memory_mb": memory_mb}},
    )


def test_reach_is_the_largest_share_of_each_limit() -> None:
    trials = [
        _trial(1.0, 100.0),
        _trial(4.0, 20.0),
        _trial(99.0, 999.0, optuna.trial.TrialState.FAIL),
    ]
    reach = device_reach(trials, max_decode_ms=50.0, max_memory_mb=2000.0)
    assert reach is not None and reach.candidates == 2
    assert reach.decode_share == pytest.approx(0.08)
    assert reach.memory_share == pytest.approx(0.05)
    assert reach.out_of_reach
    note = reach.to_dict("pixel8")["note"]
    assert "under 10% of pixel8's limits" in note and "8.0% of its decode time" in note
    assert "budget=gpu" in note


@pytest.mark.parametrize("decode, memory", [(5.0, 100.0), (1.0, 200.0)])
def test_a_candidate_at_a_tenth_of_any_limit_is_within_reach(decode: float, memory: float) -> None:
    reach = device_reach([_trial(decode, memory)], max_decode_ms=50.0, max_memory_mb=2000.0)
    assert reach is not None
    assert max(reach.decode_share, reach.memory_share) >= OUT_OF_REACH_SHARE
    assert not reach.out_of_reach and "note" not in reach.to_dict("pixel8")


def test_no_priced_candidate_gives_no_reach() -> None:
    assert device_reach([], max_decode_ms=50.0, max_memory_mb=2000.0) is None


def test_a_prune_study_is_told_to_bring_a_larger_parent_not_to_raise_the_caps() -> None:
    reach = device_reach([_trial(1.0, 100.0)], max_decode_ms=50.0, max_memory_mb=2000.0,
                         pruned=True)  # fmt: skip
    assert reach is not None and reach.out_of_reach
    note = reach.to_dict("rpi5")["note"]
    assert "search_space.parent=DIR" in note and "budget.caps" not in note
