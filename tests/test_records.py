"""`nas.records`: the one owner of a trial's stored attributes.

Its batched write stores what one call per attribute would store, and its predicates decide once
which trials count (front, hypervolume, export) and which stand for themselves."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from nas import records
from nas.study.storage import open_storage
from tests.conftest import postgres_url

ATTRS = {"arch": {"n_layers": 2, "d_model": 64}, "cache_key": "abc", "trained": True, "n": 3}
CONSTRAINTS = {"memory_excess_mb": -12.5, "decode_excess_ms": 0.25}


def _both_ways(storage: optuna.storages.BaseStorage | None, name: str) -> None:
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["minimize"] * 3, load_if_exists=True
    )
    one_by_one = study.ask()
    for key, value in ATTRS.items():
        one_by_one.set_user_attr(key, value)
    for key, value in CONSTRAINTS.items():
        one_by_one.set_constraint(key, value)
    batched = study.ask()
    records._write(batched, {"arch": ATTRS["arch"], "cache_key": "abc"}, CONSTRAINTS)
    records._write(batched, {"trained": True, "n": 3})
    records._write(batched, {})  # nothing to write is no error
    assert batched.user_attrs == one_by_one.user_attrs  # the running trial's own view
    for trial in (one_by_one, batched):
        study.tell(trial, [1.0, 2.0, 3.0])
    a, b = study.get_trials()[-2:]
    assert b.user_attrs == a.user_attrs == ATTRS
    assert b.constraints == a.constraints
    assert b.constraints == CONSTRAINTS
    assert b.system_attrs == a.system_attrs


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_record_stores_what_single_writes_store(kind: str, tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    urls = {"sqlite": f"sqlite:///{tmp_path}/s.db", "journal": f"journal:///{tmp_path}/s.journal"}
    storage = open_storage(urls[kind]) if kind in urls else None
    _both_ways(storage, "record")


def test_record_on_postgresql(pg_study: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _both_ways(open_storage(postgres_url()), pg_study)


@pytest.mark.parametrize("url", ["sqlite:///{}/s.db", "journal:///{}/s.journal"])
def test_record_refuses_a_finished_trial(url: str, tmp_path: Path) -> None:
    study = optuna.create_study(storage=open_storage(url.format(tmp_path)))
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        records._write(trial, {"late": True})


def _finished(
    study: optuna.Study, attrs: dict, *, feasible: bool = True, values=(1.0, 2.0, 3.0)
) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    records._write(trial, attrs, {"memory_excess_mb": -1.0 if feasible else 5.0})
    study.tell(trial, list(values))
    return study.get_trials()[-1]


def test_one_predicate_decides_what_counts_and_what_stands_for_itself() -> None:
    study = optuna.create_study(directions=["minimize"] * 3)
    trained = _finished(study, {"trained": True})
    cached = _finished(study, {"trained": True, "cached_from": trained.number})
    skipped = _finished(study, {"trained": False, "skipped": "over the device limit: memory"})
    unmarked = _finished(study, {})  # no `trained` attribute: not trained (one default)
    over = _finished(study, {"trained": True}, feasible=False)
    assert [records.counts(t) for t in (trained, cached, skipped, unmarked, over)] == [
        True, True, False, False, False,
    ]  # fmt: skip
    assert records.stands_for_itself(trained) and not records.stands_for_itself(cached)
    view = records.read(cached)
    assert view.counts and not view.stands_for_itself and view.cached_from == trained.number
    assert records.read(skipped).skipped == "over the device limit: memory"
    assert records.read(unmarked).rung == 0 and records.read(unmarked).metrics == {}


def test_an_outcome_writes_only_what_it_measured() -> None:
    study = optuna.create_study(directions=["minimize"] * 3)
    trial = study.ask()
    records.store_outcome(trial, records.Outcome(trained=False, skipped="why"))
    assert trial.user_attrs == {"trained": False, "skipped": "why"}


def test_only_records_reads_trial_user_attributes() -> None:
    """The engine's code reads and writes trial user attributes through `nas.records` alone."""
    root = Path(__file__).resolve().parents[1]
    readers = sorted(
        str(path.relative_to(root))
        for package in ("nas", "predictors", "search_spaces")
        for path in (root / package).rglob("*.py")
        if re.search(r"\.user_attrs\b|\.set_user_attr\(", path.read_text())
    )
    assert readers == ["nas/records.py"]
