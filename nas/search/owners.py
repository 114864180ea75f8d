"""Who runs a trial, and is that process still alive: owner records, orphans and re-queueing.

Each trial records its worker (host, boot id, pid, process start time) in `nas.records`; a
RUNNING trial whose worker process is gone (on this machine) is failed and queued again with the
same parameters, keeping Optuna's own retry attributes.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas import records

log = logging.getLogger("nas.search")

TRAINED_S = 0.5  # an objective this long built and trained a model


def _start_ticks(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (tells a reused pid apart), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])  # zombies count as dead


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def owner_record(trial_number: int) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pid": pid,
        "start": _start_ticks(pid),
        "trial": trial_number,
    }


def owner_is_dead(trial: FrozenTrial) -> bool:
    """True only when the trial's own worker ran on this machine and its process is gone."""
    owner = records.worker(trial)
    if owner is None or owner.get("trial") != trial.number:
        return False  # not yet claimed by its worker (e.g. a re-queued copy just popped)
    if owner.get("host") != socket.gethostname() or owner.get("boot") != _boot_id():
        return False  # another machine: the heartbeat (RDB) decides
    if Path("/proc").is_dir():
        return _start_ticks(owner["pid"]) != owner.get("start")
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def requeue(
    study: optuna.Study, trial: FrozenTrial, reason: str, *, retries: int, owned: bool = False
) -> bool:
    """Fail `trial` if still running and queue a copy with the same parameters (WAITING).

    Only the process whose RUNNING -> FAIL change went through queues the copy (storages make
    that change once), so two processes that see the same dead worker queue one retry; a trial
    already failed is queued only by its `owned` worker (Optuna fails it on Ctrl-C).
    Keeps Optuna's retry attributes (`failed_trial`, `retry_history`), so its tools see a retry.
    Returns False when another process got there first or the retries are used up.
    """
    storage = study._storage  # the public Study API cannot change another trial's state
    if trial.state == TrialState.RUNNING:
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                return False
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # finished, or failed by another worker, meanwhile
    elif trial.state != TrialState.FAIL or not owned:
        return False
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > retries:
        log.warning("trial %d %s; not retried (%d retries used)", trial.number, reason, retries)
        return False
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=records.requeued_attrs(trial, reason),
            system_attrs={
                **trial.system_attrs,
                "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                "retry_history": history,
            },
        )
    )
    log.warning("trial %d %s; failed it and queued a retry", trial.number, reason)
    return True


def recover_orphans(study: optuna.Study, *, retries: int, all_running: bool = False) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker died (all of them if `all_running`)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    reason = "was left running by a process that stopped" if all_running else "lost its worker"
    return [
        t.number
        for t in running
        if (all_running or owner_is_dead(t)) and requeue(study, t, reason, retries=retries)
    ]


class OwnedObjective:
    """Wraps the objective: records which process runs each trial, and which trial is current."""

    def __init__(self, objective: Callable[[optuna.Trial], Any], retries: int) -> None:
        self.objective = objective
        self.retries = retries
        self.current: int | None = None  # trial id
        self.on_start: Callable[[int], None] | None = None

    def __call__(self, trial: optuna.Trial) -> Any:
        self.current = trial._trial_id
        records.store_worker(trial, owner_record(trial.number))
        if self.on_start is not None:
            self.on_start(trial.number)
        started = time.perf_counter()
        try:
            return self.objective(trial)
        finally:
            # A trained model leaves reference cycles behind; a trial that only priced its
            # candidate leaves none worth a full collection (~13 ms) after every trial.
            if time.perf_counter() - started > TRAINED_S:
                gc.collect()

    def release(self, study: optuna.Study) -> None:
        """After an interrupt: the current trial is marked failed and re-queued for the resume."""
        if self.current is not None:
            trial = study._storage.get_trial(self.current)
            requeue(study, trial, "was interrupted", retries=self.retries, owned=True)
            self.current = None
