"""Run a study's trials: in this process, or in `study.workers=N` local worker processes.

Storages and who may write them:

- `sqlite:///FILE` (the default) takes one writing process at a time. `nas.study.StudyLock` holds an
  exclusive lock on `FILE.lock` for the whole run, so a second `python -m nas.search` on the same
  study stops with one line instead of risking "database is locked". Because of that lock, a
  RUNNING trial found at start belongs to a process that died: it is failed and re-queued.
- `journal:///FILE` (Optuna's JournalStorage) takes several processes on one machine: the
  `study.workers=N` pool or commands started by hand. Each trial records its worker (host, pid,
  process start time); a RUNNING trial whose worker process is gone is failed and re-queued.
- an RDB server (`postgresql://...`) takes many machines. Optuna's heartbeat fails the trial of a
  worker that stopped beating for `study.grace_s` seconds and re-queues it (`nas.study`).

The pool shares one counter of trials still to start, so N workers add exactly `study.n_trials`
trials together; a worker that dies gives its slot back, its trial is failed and re-queued with the
same parameters, and a new worker takes its place. Each worker runs torch on
`cores // workers` threads (or `study.threads`), so the pool never oversubscribes the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from nas.config import require_int
from nas.errors import NasError, RedactingFilter, redact
from nas.study import is_journal, is_sqlite, make_sampler, release_study

log = logging.getLogger("nas.search")

Callback = Callable[[optuna.Study, FrozenTrial], None]
IDLE, HOLDING = -1, -2  # a worker's `current` slot: idle, or holding a slot with no trial yet
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
POLL_S = 0.5
# Imported once by the forkserver, so that no worker pays for them: transformers loads its model
# code lazily, and the first model a fresh process builds took ~1 s of imports.
PRELOAD = [
    "nas.search",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen3_moe.modeling_qwen3_moe",
]
TRAINED_S = 0.5  # an objective this long built and trained a model


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_threads(cfg: DictConfig) -> int:
    """torch threads per worker: `study.threads`, or the cores shared out among the workers."""
    threads = cfg.study.get("threads", "auto")
    if threads in (None, "auto"):
        return max(1, available_cores() // require_int(cfg, "study.workers", minimum=1))
    return require_int(cfg, "study.threads", minimum=1)


# -- who runs a trial, and is that process still alive ------------------------------------------


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
    owner = trial.user_attrs.get("worker")
    if not isinstance(owner, dict) or owner.get("trial") != trial.number:
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
            user_attrs={**trial.user_attrs, "requeued": reason},
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
        trial.set_user_attr("worker", owner_record(trial.number))
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


# -- running trials ------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SLURM and `kill` send SIGTERM: stop as cleanly as on Ctrl-C."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_workers(cfg: DictConfig) -> tuple[int, int, int]:
    """(workers, threads per worker, retries); refuses several writers on one SQLite file and,
    for a pool, starts its forkserver."""
    url = str(cfg.study.storage)
    workers = require_int(cfg, "study.workers", minimum=1)
    retries = require_int(cfg, "study.retries", minimum=0)
    threads = worker_threads(cfg)
    if workers > 1 and is_sqlite(url):
        raise NasError(
            f"study.workers={workers} needs a storage that takes several writers, and SQLite "
            f"does not: add study.storage=journal:///{Path(cfg.runs_dir) / cfg.study.name}"
            "/study.journal (one machine) or study.storage=postgresql://... (many machines)"
        )
    if workers > 1 and _context().get_start_method() == "forkserver":
        # Start the forkserver now: its imports (torch, transformers) overlap the data set-up.
        multiprocessing.forkserver.ensure_running()
    return workers, threads, retries


def run_trials(
    cfg: DictConfig,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    n_trials: int,
    timeout: float,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
) -> None:
    """Add `n_trials` trials to `study` (in `study.workers` processes); KeyboardInterrupt on
    Ctrl-C or SIGTERM, after the running trials are marked failed and re-queued."""
    url = str(cfg.study.storage)
    try:
        workers, threads, retries = check_workers(cfg)
    except NasError:
        release_study(url)
        raise
    import torch  # deferred: helpers here (owner records, orphan recovery) stay light to import

    torch.set_num_threads(threads)
    try:
        with _sigterm_as_interrupt():
            if is_sqlite(url):
                # open_study holds this SQLite file's lock: a RUNNING trial is a dead process's.
                recover_orphans(study, retries=retries, all_running=True)
                _run_here(study, objective, n_trials, timeout, callbacks, catch, retries, url)
            elif workers == 1 or n_trials == 0:
                _run_here(study, objective, n_trials, timeout, callbacks, catch, retries, url)
            else:
                _run_pool(cfg, study, objective, n_trials, timeout, callbacks, catch, threads)
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise NasError(
            f"lost the study storage {redact(url)}: {redact(reason)}; finished trials are safe, "
            "run the same command again to resume"
        ) from None
    finally:
        release_study(url)


def _run_here(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    timeout: float,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
    retries: int,
    url: str,
) -> None:
    owned = OwnedObjective(objective, retries)
    extra: list[Callback] = []
    if is_journal(url):  # other local processes may share the file: take over their dead trials
        recover_orphans(study, retries=retries)
        extra.append(lambda s, _t: recover_orphans(s, retries=retries))
    _freeze_heap()
    quiet = _NoInterruptTraceback()
    logging.getLogger("optuna").addFilter(quiet)
    try:
        study.optimize(
            owned,
            n_trials=n_trials,
            timeout=timeout,
            callbacks=[*extra, *callbacks],
            catch=catch,
            gc_after_trial=False,
        )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        try:
            owned.release(study)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise
    finally:
        logging.getLogger("optuna").removeFilter(quiet)
        gc.unfreeze()


def _freeze_heap() -> None:
    """Move everything alive now (torch, transformers, the corpus) out of the garbage collector's
    sight: Optuna's gc after each trial then scans only that trial's objects (255 ms -> ~1 ms)."""
    gc.collect()
    gc.freeze()


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs the objective's KeyboardInterrupt with its traceback; Ctrl-C is no crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        return not (exc is not None and issubclass(exc, KeyboardInterrupt))


def _context() -> multiprocessing.context.BaseContext:
    """forkserver: torch and transformers are imported once, and no worker inherits the parent's
    threads or database connections (plain fork would)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _run_pool(
    cfg: DictConfig,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    timeout: float,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
    threads: int,
) -> None:
    workers = int(cfg.study.workers)
    retries = int(cfg.study.retries)
    ctx = _context()
    slots = ctx.Value("i", n_trials)
    current = ctx.Array("i", [IDLE] * workers)
    deadline = time.time() + timeout
    seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    spec = {
        "sampler": cfg.sampler,
        "seed": int(cfg.seed) + len(study.trials),
        "retries": retries,
        "threads": threads,
        "journal": is_journal(str(cfg.study.storage)),
        "deadline": deadline,
    }

    def start(index: int, generation: int) -> multiprocessing.process.BaseProcess:
        args = (index, generation, study, objective, catch, slots, current, spec)
        proc = ctx.Process(target=_worker_main, args=args, name=f"nas-worker-{index}")
        proc.start()
        return proc

    log.info("%d workers x %d torch threads; %d trials to add", workers, threads, n_trials)
    procs = {i: start(i, 0) for i in range(workers)}
    restarts = 0
    try:
        while procs:
            for index, proc in list(procs.items()):
                if proc.is_alive():
                    continue
                proc.join()
                del procs[index]
                if proc.exitcode == 0:
                    continue
                if proc.exitcode == 2:  # the worker printed a NasError line
                    raise NasError(f"worker {index} stopped on the error above")
                _reclaim(study, current, index, slots, retries, proc.exitcode)
                if slots.value > 0 and time.time() < deadline and restarts < 2 * workers:
                    restarts += 1
                    procs[index] = start(index, restarts)
            _report_new(study, seen, callbacks)
            # Wake as soon as a worker exits (the last one: the run is over), else every POLL_S.
            if procs:
                multiprocessing.connection.wait([p.sentinel for p in procs.values()], POLL_S)
        _report_new(study, seen, callbacks)
        if slots.value > 0 and time.time() < deadline:
            log.warning("workers kept failing; %d trials were not run", slots.value)
    except BaseException:
        _stop(procs, study, current, slots, retries)
        raise


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _reclaim(
    study: optuna.Study,
    current: Any,
    index: int,
    slots: Any,
    retries: int,
    code: int | None,
) -> None:
    """A worker died: fail and re-queue its trial, and give its slot back to the pool."""
    held = current[index]
    current[index] = IDLE
    log.warning("worker %d %s", index, _describe_exit(code))
    if held == IDLE:
        return
    with slots.get_lock():
        slots.value += 1
    if held >= 0:
        trial = study.get_trials(deepcopy=False)[held]
        requeue(study, trial, f"lost its worker ({_describe_exit(code)})", retries=retries)


def _stop(
    procs: dict[int, multiprocessing.process.BaseProcess],
    study: optuna.Study,
    current: Any,
    slots: Any,
    retries: int,
) -> None:
    """Ctrl-C or an error: let every worker mark its trial, then make sure none is left."""
    deadline = time.time() + 2  # a terminal's Ctrl-C reaches the workers by itself
    for proc in procs.values():
        proc.join(max(0.0, deadline - time.time()))
    for proc in procs.values():
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGINT)
    for index, proc in procs.items():
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join()
        if current[index] != IDLE:  # it could not clean up after itself
            _reclaim(study, current, index, slots, retries, proc.exitcode)


def _report_new(study: optuna.Study, seen: set[int], callbacks: Sequence[Callback]) -> None:
    new = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.number not in seen]
    for trial in sorted(new, key=lambda t: t.number):
        seen.add(trial.number)
        for callback in callbacks:
            callback(study, trial)


def _worker_main(
    index: int,
    generation: int,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    catch: tuple[type[Exception], ...],
    slots: Any,
    current: Any,
    spec: dict[str, Any],
) -> None:
    """One pool worker: take a slot, run one trial, repeat until no slot or time is left."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {index}: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import torch

    torch.set_num_threads(spec["threads"])
    # Distinct seeds: workers with one seed would propose the same candidates.
    seed = spec["seed"] + 7919 * (index + 1) + 104729 * generation
    study.sampler = make_sampler(spec["sampler"], seed)
    # As `_freeze_heap`, without its collection (0.2 s): a forked worker's heap holds no garbage
    # worth collecting before its first trial.
    gc.freeze()
    owned = OwnedObjective(objective, spec["retries"])
    owned.on_start = lambda number: current.__setitem__(index, number)
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # SLURM: as on Ctrl-C
    try:
        while time.time() < spec["deadline"]:
            with slots.get_lock():
                if slots.value <= 0:
                    break
                slots.value -= 1
                current[index] = HOLDING
            if spec["journal"]:
                recover_orphans(study, retries=spec["retries"])
            study.optimize(
                owned,
                n_trials=1,
                timeout=max(1.0, spec["deadline"] - time.time()),
                catch=catch,
                gc_after_trial=False,
            )
            current[index] = IDLE
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        owned.release(study)
        current[index] = IDLE
        os._exit(130)
    except NasError as err:
        print(f"error: worker {index}: {redact(' '.join(str(err).split()))}", flush=True)
        os._exit(2)
