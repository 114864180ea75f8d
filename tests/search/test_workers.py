"""Several workers on one study: the local pool on PostgreSQL and on a journal file, commands
started by hand, threads per worker, and who owns a running trial."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config.compose import load_settings
from nas.samplers.factory import SamplerSpec
from nas.search.owners import owner_is_dead, owner_record
from nas.search.run import run_search
from nas.search.workers import Workers, available_cores
from nas.study.storage import open_storage


def workers_of(settings) -> Workers:
    return Workers.from_settings(settings.study, 0, SamplerSpec({}))


def worker_threads(settings) -> int:
    return workers_of(settings).threads


def test_three_workers_on_postgres_add_exactly_n_trials(
    smoke_overrides: list[str], tiny: list[str], pg_url: str, pg_study: str
) -> None:
    cfg = load_settings(
        [*smoke_overrides, *tiny, f"study.name={pg_study}", f"study.storage={pg_url}",
         "study.workers=3", "study.n_trials=7"]
    )  # fmt: skip
    result = run_search(cfg)
    trials = optuna.load_study(study_name=pg_study, storage=open_storage(pg_url)).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert result.finished == len(done) >= 7  # no error
    # exactly 7 places; beyond them only late promotions, which run after the run's trials
    late = [t for t in trials if "continues" in t.user_attrs]
    assert len(trials) - 7 <= len(late)
    assert all(t in done or "stood down" in t.user_attrs["promotion"] for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # no duplicate numbers
    trials = done
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(workers) >= 2 and os.getpid() not in workers  # really run by the pool
    assert all(t.user_attrs["worker"]["trial"] == t.number for t in trials)


@pytest.mark.slow
def test_commands_started_by_hand_share_a_journal(
    smoke_overrides: list[str], tiny: list[str], tmp_path: Path
) -> None:
    """Two `python -m nas.search` on one machine and one journal file: each adds its trials."""
    url = f"journal:///{tmp_path}/shared/study.journal"
    args = [*smoke_overrides, *tiny, "study.name=H", f"study.storage={url}", "study.n_trials=3"]
    run_search(load_settings([*args, "study.n_trials=0"]))  # create it (and warm the cache)
    procs = [
        subprocess.Popen([sys.executable, "-m", "nas.search", *args, "study.threads=1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    trials = optuna.load_study(study_name="H", storage=open_storage(url)).trials
    # 3 trials each; late promotions (`continues`) may take places and also run after them
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 6 and len([t for t in done if "continues" not in t.user_attrs]) <= 6
    assert all(t.state == TrialState.COMPLETE or "stood down" in t.user_attrs["promotion"]
               for t in trials)  # fmt: skip
    origins = [t.user_attrs["continues"] for t in done if "continues" in t.user_attrs]
    assert len(origins) == len(set(origins))  # a candidate is taken further once
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2


def test_threads_share_the_cores_among_workers(smoke_overrides: list[str]) -> None:
    cores = available_cores()
    assert worker_threads(load_settings(smoke_overrides)) == cores
    two = load_settings([*smoke_overrides, "study.workers=2", "study.storage=journal:///x.j"])
    assert worker_threads(two) == max(1, cores // 2)
    assert worker_threads(load_settings([*smoke_overrides, "study.threads=3"])) == 3


def test_one_process_starts_every_trial_with_one_worker_or_on_sqlite(
    smoke_overrides: list[str],
) -> None:
    """Where this process starts every trial, the run's last one may round promotion up."""

    def workers(*args: str) -> Workers:
        return workers_of(load_settings([*smoke_overrides, *args]))

    assert workers().in_process  # the default: one worker on SQLite
    assert workers("study.storage=journal:///x.j").in_process
    assert not workers("study.workers=2", "study.storage=journal:///x.j").in_process


def test_owner_of_a_trial_is_alive_or_dead(tmp_path: Path) -> None:
    study = optuna.create_study(
        study_name="o", storage=open_storage(f"journal:///{tmp_path}/o.journal")
    )
    mine = study.ask()
    mine.set_user_attr("worker", owner_record(mine.number))
    gone = subprocess.run(
        [sys.executable, "-c",
         "from nas.search.owners import owner_record; print(owner_record(0))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = ast.literal_eval(gone.stdout)  # the record of a process that has exited
    dead = study.ask()
    dead.set_user_attr("worker", {**record, "trial": dead.number})
    remote = study.ask()
    other_host = {**record, "trial": remote.number, "host": "other-" + socket.gethostname()}
    remote.set_user_attr("worker", other_host)
    unclaimed = study.ask()  # a re-queued copy keeps its old owner's record until claimed
    unclaimed.set_user_attr("worker", {**record, "trial": 0})
    by_number = {t.number: owner_is_dead(t) for t in study.get_trials(deepcopy=False)}
    assert by_number == {0: False, 1: True, 2: False, 3: False}
