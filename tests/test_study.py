"""`nas.study.record`: one transaction stores what one call per attribute would store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas.config import compose_config
from nas.study import make_sampler, open_storage, record
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
    record(batched, {"arch": ATTRS["arch"], "cache_key": "abc"}, CONSTRAINTS)
    record(batched, {"trained": True, "n": 3})
    record(batched, {})  # nothing to write is no error
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
        record(trial, {"late": True})


def test_one_process_tpe_drops_the_constant_liar() -> None:
    tpe = compose_config(["sampler=tpe"]).sampler
    assert make_sampler(tpe, 0, parallel=True)._constant_liar
    assert not make_sampler(tpe, 0, parallel=False)._constant_liar
    random = compose_config(["sampler=random"]).sampler  # takes no constant liar: still builds
    assert isinstance(make_sampler(random, 0, parallel=False), optuna.samplers.RandomSampler)
