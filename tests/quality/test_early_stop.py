"""Multi-objective early stopping: the rule, the trial's honest record, and the bench's replay."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from nas.bench.early_stop import replay
from nas.config.compose import load_settings
from nas.config.schema import EarlyStopConfig
from nas.objectives.hypervolume import Reference
from nas.quality.early_stop import EarlyStopping, Finished, make_early_stopping
from nas.search.run import run_search

RULE = EarlyStopping(fractions=(0.25, 0.5))
# Smallest and fastest candidate (first) and a larger, slower one (second), smoke caps.
SMALL = {
    "n_layers": 1, "n_heads": 1, "head_dim": 16, "n_kv_heads|n_heads=1": 1, "ffn_ratio": 1.5,
    "n_experts": 1, "tie_embeddings": True, "weight_bits": 4, "group_size": 32, "sparsity": "none",
}  # fmt: skip
LARGE = {
    "n_layers": 2, "n_heads": 4, "head_dim": 16, "n_kv_heads|n_heads=4": 4, "ffn_ratio": 4.0,
    "n_experts": 1, "tie_embeddings": False, "weight_bits": 16, "sparsity": "none",
}  # fmt: skip


def test_rule_needs_no_slower_no_larger_and_better_at_the_same_step() -> None:
    other = Finished(number=3, decode_ms=1.0, memory_mb=10.0, checkpoints={15: 4.0, 30: 3.5})
    assert RULE.beaten_by(15, 4.2, 1.0, 10.0, [other]) is other
    assert RULE.beaten_by(15, 3.9, 1.0, 10.0, [other]) is None  # this one is better there
    assert RULE.beaten_by(15, 4.2, 0.9, 10.0, [other]) is None  # this one is faster
    assert RULE.beaten_by(15, 4.2, 1.0, 9.0, [other]) is None  # this one is smaller
    assert RULE.beaten_by(45, 9.9, 1.0, 10.0, [other]) is None  # no value at that step
    assert EarlyStopping(margin=0.5).beaten_by(15, 4.2, 1.0, 10.0, [other]) is None
    assert RULE.steps(60) == [15, 30]


def test_disabled_unless_enabled() -> None:
    assert make_early_stopping(EarlyStopConfig()) is None
    assert make_early_stopping(EarlyStopConfig(enabled=False, margin=0.0)) is None
    rule = make_early_stopping(EarlyStopConfig(enabled=True, checkpoints=[0.5], margin=0.1))
    assert rule == EarlyStopping(fractions=(0.5,), margin=0.1)
    rule = make_early_stopping(EarlyStopConfig(enabled=True, margin=0.0, min_gain=0.01))
    assert rule is not None and rule.min_gain == 0.01
    assert make_early_stopping(load_settings(["proxy.early_stop.enabled=true"]).proxy.early_stop)


def _study_with(overrides: list[str], margin: float) -> tuple[optuna.Study, Path]:
    cfg = load_settings(
        [
            *overrides,
            "study.name=ES",
            "study.n_trials=2",
            "proxy.early_stop.enabled=true",
            "proxy.early_stop.checkpoints=[0.25,0.5]",
            f"proxy.early_stop.margin={margin}",
        ]
    )
    study = optuna.create_study(
        study_name="ES", storage=_prepared(cfg.study.storage), directions=["minimize"] * 3
    )
    study.enqueue_trial(SMALL)
    study.enqueue_trial(LARGE)
    run_search(cfg)
    return optuna.load_study(study_name="ES", storage=cfg.study.storage), Path(cfg.runs_dir)


def _prepared(url: str) -> str:
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def test_dominated_trial_is_pruned_with_its_partial_curve(smoke_overrides: list[str]) -> None:
    # A negative margin makes any no-slower, no-larger finished trial enough to stop the next.
    study, runs_dir = _study_with(smoke_overrides, margin=-100.0)
    first, second, onward = study.trials  # onward: first's late promotion, once none remain
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert onward.user_attrs["continues"] == first.number
    assert second.state == optuna.trial.TrialState.PRUNED
    stopped = second.user_attrs["early_stopped"]
    assert stopped["reason"].startswith(f"trial {first.number} is no slower")
    assert stopped["step"] == 2  # 1/4 of the smoke budget's 6 steps, rounded
    assert second.user_attrs["trained"] is False
    assert [c[0] for c in second.user_attrs["checkpoints"]] == [2]
    assert second.user_attrs["train_tokens"] < first.user_attrs["train_tokens"]
    front = json.loads((runs_dir / "ES" / "pareto.json").read_text())["pareto"]
    assert [e["trial"] for e in front] == [onward.number]


def test_nothing_is_stopped_when_nothing_beats_it(smoke_overrides: list[str]) -> None:
    study, _ = _study_with(smoke_overrides, margin=100.0)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [c[0] for c in study.trials[1].user_attrs["checkpoints"]] == [2, 3, 6]


def _trial(number: int, bpb: float, decode: float, memory: float, curve: dict[int, float]):
    trial = optuna.trial.create_trial(
        values=[bpb, decode, memory],
        user_attrs={
            "trained": True,
            "metrics": {"decode_ms": decode, "memory_mb": memory},
            "checkpoints": [[s, v] for s, v in curve.items()],
        },
        system_attrs={"constraints": [0.0]},
    )
    trial.number = number
    return trial


def test_replay_counts_compute_and_hypervolume() -> None:
    reference = Reference(bpb=10.0, decode_ms=10.0, memory_mb=100.0)
    good = _trial(0, 3.0, 1.0, 10.0, {15: 5.0, 30: 4.0, 60: 3.0})
    beaten = _trial(1, 3.5, 2.0, 20.0, {15: 5.5, 30: 4.5, 60: 3.5})  # dominated at step 15
    other = _trial(2, 2.5, 3.0, 30.0, {15: 4.5, 30: 3.5, 60: 2.5})  # better: not stopped
    result = replay([good, beaten, other], RULE, steps=60, eval_cost=0.0, reference=reference)
    assert result["stopped"] == [(1, 15)]
    assert result["compute_saved"] == pytest.approx(45 / 180)
    assert result["hv_lost"] == pytest.approx(0.0)  # the stopped one was dominated anyway


def test_gain_rule_stops_what_would_not_move_the_front() -> None:
    reference = Reference(bpb=10.0, decode_ms=10.0, memory_mb=100.0)
    finished = [
        Finished(n, 1.0 + n, 10.0, {15: 5.0 + n}, values=(3.0 + n, 1.0 + n, 10.0)) for n in range(3)
    ]
    rule = EarlyStopping(min_gain=0.01)
    # A little faster than all (not dominated), projected far worse in bpb: gain below 1%.
    assert "projected hypervolume gain" in rule.should_stop(
        15, 9.5, 0.99, 10.0, finished, reference
    )
    # Projected better than every finished trial: a real gain, keep training.
    assert rule.should_stop(15, 4.0, 0.99, 10.0, finished, reference) is None
    assert EarlyStopping().should_stop(15, 9.5, 0.99, 10.0, finished, reference) is None
