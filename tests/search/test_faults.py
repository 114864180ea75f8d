"""Faults, for real: SIGKILL of a worker mid-trial, a dead process's trial on resume, a stale
heartbeat on PostgreSQL, Ctrl-C, a second writer on SQLite, a full disk under pareto.json."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config.compose import load_settings
from nas.errors import NasError
from nas.search.run import run_search
from nas.study.lock import release_study
from nas.study.storage import open_storage

RUNNING = (TrialState.RUNNING,)


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def claimed_running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Running trials whose worker is training the candidate (so: mid-trial)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=RUNNING)
        if t.user_attrs.get("worker", {}).get("trial") == t.number and "cache_key" in t.user_attrs
    ]


def claim_and_die(script: str) -> None:
    """Run `script` (which claims a trial, then SIGKILLs itself) in a fresh process."""
    dead = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert dead.returncode == -signal.SIGKILL, dead.stderr


def kill_when_mid_trial(url: str, name: str, kill: dict, *, pid: int | None = None) -> None:
    """Poll the study; once one trial is finished and another is running, SIGKILL its worker."""
    deadline = time.time() + 300
    study = None
    while time.time() < deadline:
        time.sleep(0.1)
        try:
            study = study or load(url, name)
            running = claimed_running(study)
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        except KeyError:
            continue  # not created yet
        except Exception:  # e.g. "database is locked" mid-commit: poll again
            continue
        if running and done:
            victim = max(running, key=lambda t: t.datetime_start)  # the most time left
            os.kill(pid or victim.user_attrs["worker"]["pid"], signal.SIGKILL)
            kill.update(trial=victim.number, done={t.number: t.values for t in done})
            return


def check_recovered(study: optuna.Study, kill: dict, expected_complete: int) -> None:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # n_trials trials, none lost; late promotions (`continues`: a candidate taken further) may
    # take some of those places and run after them, but no candidate is sampled beyond them
    sampled = [t for t in complete if "continues" not in t.user_attrs]
    assert len(sampled) <= expected_complete <= len(complete)
    for number, values in kill["done"].items():  # every trial finished before the kill survives
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    stale = trials[kill["trial"]]
    assert stale.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == stale.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == stale.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_sigkill_of_a_pool_worker_mid_trial(
    smoke_overrides: list[str], tiny: list[str], tmp_path: Path
) -> None:
    url = f"journal:///{tmp_path}/pool/study.journal"
    cfg = load_settings(
        [*smoke_overrides, *tiny, "study.name=K", "study.workers=2", f"study.storage={url}",
         "study.n_trials=4", "proxy.steps=150"]
    )  # fmt: skip
    kill: dict = {}
    killer = threading.Thread(target=kill_when_mid_trial, args=(url, "K", kill), daemon=True)
    killer.start()
    result = run_search(cfg)
    killer.join(10)
    assert kill, "no worker was caught mid-trial"
    study = load(url, "K")
    check_recovered(study, kill, expected_complete=4)  # n_trials, none lost
    assert result.finished == len(study.get_trials(states=(TrialState.COMPLETE,)))


@pytest.mark.slow
def test_sigkill_of_a_search_then_resume_on_sqlite(
    smoke_overrides: list[str], tiny: list[str]
) -> None:
    """The whole `python -m nas.search` process is killed; the same command resumes it."""
    args = [*smoke_overrides, *tiny, "study.name=S", "proxy.steps=150"]
    url = load_settings(args).study.storage
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.search", *args, "study.n_trials=3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    kill: dict = {}
    kill_when_mid_trial(url, "S", kill, pid=proc.pid)
    proc.wait(60)
    assert kill and proc.returncode == -signal.SIGKILL
    left = 3 - len(kill["done"])
    resumed = subprocess.run(
        [sys.executable, "-m", "nas.search", *args, f"study.n_trials={left}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    check_recovered(load(url, "S"), kill, expected_complete=3)


def test_dead_process_trial_is_failed_and_retried_on_resume(
    smoke_overrides: list[str], tiny: list[str]
) -> None:
    """A real process claims a trial on the SQLite study and is SIGKILLed; the next run under
    the single-writer lock fails that trial, retries its parameters and finishes its count."""
    cfg = load_settings([*smoke_overrides, *tiny, "study.name=D", "study.n_trials=1"])
    run_search(cfg)
    url = str(cfg.study.storage)
    claim = (
        "import os, signal, optuna\n"
        "from nas.study.storage import open_storage\n"
        "from nas.search.owners import owner_record\n"
        f"study = optuna.load_study(study_name='D', storage=open_storage({url!r}))\n"
        "trial = study.ask()\n"
        "trial.suggest_categorical('n_layers', [1])\n"
        "trial.set_user_attr('worker', owner_record(trial.number))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    claim_and_die(claim)
    before = load(url, "D").get_trials(deepcopy=False)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    run_search(load_settings([*smoke_overrides, *tiny, "study.name=D", "study.n_trials=1"]))
    trials = load(url, "D").get_trials(deepcopy=False)
    assert trials[0].values == before[0].values  # the finished trial is untouched
    assert trials[1].state == TrialState.FAIL
    assert trials[2].system_attrs["failed_trial"] == 1
    assert trials[2].params["n_layers"] == 1 and trials[2].state == TrialState.COMPLETE


def test_stale_heartbeat_on_postgres_fails_and_requeues(pg_url: str, pg_study: str) -> None:
    url = pg_url
    claim = (
        "import os, signal, optuna\n"
        "from nas.study.storage import open_storage\n"
        f"storage = open_storage({url!r}, heartbeat_s=1, grace_s=2)\n"
        f"study = optuna.create_study(study_name={pg_study!r}, storage=storage)\n"
        "trial = study.ask()\n"
        "trial.suggest_int('n_layers', 1, 4)\n"
        "storage.record_heartbeat(trial._trial_id)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    claim_and_die(claim)
    storage = open_storage(url, heartbeat_s=1, grace_s=2, retries=1)
    study = optuna.load_study(study_name=pg_study, storage=storage)
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(3.5)  # past the grace period, as another machine's worker would see it
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0


def test_ctrl_c_marks_the_running_trial_and_says_how_to_resume(
    smoke_overrides: list[str], tiny: list[str]
) -> None:
    args = [*smoke_overrides, *tiny, "study.name=C", "proxy.steps=150"]
    # Far more trials than the watcher needs: on a fast idle machine a short run could otherwise
    # finish before the watcher sees a running trial after a finished one.
    cfg = load_settings([*args, "study.n_trials=40"])
    url = str(cfg.study.storage)

    watch: dict[str, object] = {"polls": 0, "errors": set(), "handler": None}

    def press_ctrl_c() -> None:
        deadline = time.time() + 300
        study = None
        while time.time() < deadline:
            time.sleep(0.1)
            watch["polls"] = int(watch["polls"]) + 1  # type: ignore[call-overload]
            try:
                study = study or load(url, "C")
                done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                running = claimed_running(study)
            except KeyError:
                continue
            except Exception as err:  # e.g. "database is locked" mid-commit: poll again
                watch["errors"].add(repr(err)[:200])  # type: ignore[union-attr]
                continue
            if done and running:
                watch["handler"] = repr(signal.getsignal(signal.SIGINT))
                os.kill(os.getpid(), signal.SIGINT)  # what a terminal sends on Ctrl-C
                return

    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a
    # non-interactive shell (`cmd &`, as some CI runners do) inherits SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    try:
        run_search(cfg)
    except NasError as err:
        message = str(err)
    else:
        pytest.fail(f"the run was never interrupted; watcher: {watch}")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "interrupted" in message and "Run the same command again to resume" in message
    assert "\n" not in message
    trials = load(url, "C").get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states  # the database is consistent
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == failed[0].params
    assert waiting[0].user_attrs["requeued"] == "was interrupted"
    assert (Path(cfg.runs_dir) / "C" / "pareto.json").is_file()  # the front so far is written
    # The same command resumes: the interrupted candidate runs first.
    run_search(load_settings([*args, "study.n_trials=1"]))
    retried = load(url, "C").trials[waiting[0].number]
    assert retried.state == TrialState.COMPLETE


def test_second_writer_on_sqlite_is_refused(smoke_overrides: list[str], tiny: list[str]) -> None:
    cfg = load_settings([*smoke_overrides, *tiny, "study.name=W", "study.n_trials=1"])
    run_search(cfg)
    url = str(cfg.study.storage)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import sys, time; from nas.study.lock import lock_study; lock_study({url!r}); "
         "print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        release_study(url)
        with pytest.raises(NasError, match=r"is being searched by pid \d+ .*SQLite takes one"):
            run_search(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert len(load(url, "W").trials) == 1  # nothing was added or lost


def test_full_disk_leaves_the_old_pareto_json(
    tmp_path: Path, shared_cache: Path, tiny: list[str]
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); a full disk is not simulated")
    try:
        args = ["budget=smoke", *tiny, f"runs_dir={mount}", f"cache_dir={shared_cache}",
                "study.name=F", "study.n_trials=1", "quiet=true"]  # fmt: skip
        run_search(load_settings(args))
        pareto = mount / "F" / "pareto.json"
        before = pareto.read_bytes()
        filler = mount / "filler"
        with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last byte
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * 4096)
        with pytest.raises(NasError, match="runs_dir is out of space"):
            run_search(load_settings([*args[:-2], "study.n_trials=0", "quiet=true"]))
        assert pareto.read_bytes() == before and json.loads(before)["finished_trials"] == 1
        assert not list((mount / "F").glob(".*.tmp")), "a temporary file was left behind"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # -l: SQLite may hold it
