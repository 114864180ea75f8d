"""Run a study's trials: in this process, or in `study.workers=N` local worker processes.

Storages and who may write them:

- `sqlite:///FILE` (the default) takes one writing process at a time: `nas.study.lock.StudyLock`
  locks `FILE.lock` for the whole run (a second search on it stops with one line, not "database is
  locked"), so a RUNNING trial found at start belongs to a dead process: failed and re-queued.
- `journal:///FILE` (Optuna's JournalStorage) takes several processes on one machine. Each trial
  records its worker (host, pid, start time); one whose process is gone is failed and re-queued.
- an RDB server (`postgresql://...`) takes many machines. Optuna's heartbeat fails the trial of a
  worker that stopped beating for `study.grace_s` seconds and re-queues it (`nas.study.storage`).

The pool shares one counter of trials still to start, so N workers add exactly `study.n_trials`
trials together (then the late promotions left, `nas.search.late`); a worker that dies gives its
slot back, its trial is failed and re-queued with the same parameters, and a new worker takes its
place. Each worker runs torch on `cores // workers` threads (or `study.threads`).
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
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.cli import redact_logs, reported_once
from nas.config.schema import StudyConfig
from nas.errors import NasError, explain, one_line
from nas.records import FINISHED
from nas.samplers.factory import SamplerSpec
from nas.search.owners import OwnedObjective, recover_orphans, requeue
from nas.study.lock import release_study
from nas.study.storage import is_journal, is_sqlite, storage_errors

log = logging.getLogger("nas.search")

Callback = Callable[[optuna.Study, FrozenTrial], None]
IDLE, HOLDING = -1, -2  # a worker's `current` slot: idle, or holding a slot with no trial yet
POLL_S = 0.5
# Imported once by the forkserver, so that no worker pays for them: transformers loads its model
# code lazily, and the first model a fresh process builds took ~1 s of imports.
PRELOAD = [
    "nas.search.run",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen3_moe.modeling_qwen3_moe",
]


@dataclass(frozen=True)
class Workers:
    """How a run adds its trials: storage, processes, threads, retries, and its sampler."""

    storage: str
    count: int
    threads: int
    retries: int
    seed: int
    sampler: SamplerSpec

    @classmethod
    def from_settings(cls, study: StudyConfig, seed: int, sampler: SamplerSpec) -> Workers:
        threads = study.threads
        if threads == "auto":  # the cores shared out among the workers
            threads = max(1, available_cores() // study.workers)
        return cls(study.storage, study.workers, int(threads), study.retries, seed, sampler)

    @property
    def in_process(self) -> bool:
        """Whether this process starts every trial: one worker, or SQLite (one writer at a time)."""
        return self.count == 1 or is_sqlite(self.storage)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def start_forkserver(workers: int) -> None:
    """A pool's forkserver, started early: its imports (torch, transformers) overlap the data
    set-up."""
    if workers > 1 and _context().get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


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


def run_trials(
    workers: Workers,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    n_trials: int,
    timeout: float,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
    then: Callable[[], int] | None = None,
) -> None:
    """Add `n_trials` trials to `study` (in `study.workers` processes), then, while `then()`
    (late promotions, within the timeout; the study's lock held throughout) says trials wait,
    those; KeyboardInterrupt on Ctrl-C or SIGTERM, after running trials are failed and re-queued."""
    url, retries = workers.storage, workers.retries
    import torch  # deferred: the pool's parent needs torch only for its thread count

    torch.set_num_threads(workers.threads)
    end = time.time() + timeout
    try:  # a full, damaged or lost storage: one line, and finished trials are safe
        with _sigterm_as_interrupt(), storage_errors(url):
            count = n_trials
            while True:
                left = max(0.0, end - time.time())
                if is_sqlite(url):  # open_study holds its lock: RUNNING is a dead process's
                    recover_orphans(study, retries=retries, all_running=True)
                if workers.in_process or count == 0:
                    _run_here(study, objective, count, left, callbacks, catch, retries, url)
                else:
                    _run_pool(workers, study, objective, count, left, callbacks, catch)
                count = then() if then and n_trials and time.time() < end else 0
                if count == 0:
                    break
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
    try:
        with reported_once(catch):
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
        gc.unfreeze()


def _freeze_heap() -> None:
    """Move everything alive now (torch, transformers, the corpus) out of the garbage collector's
    sight: Optuna's gc after each trial then scans only that trial's objects (255 ms -> ~1 ms)."""
    gc.collect()
    gc.freeze()


def _context() -> multiprocessing.context.BaseContext:
    """forkserver: torch and transformers are imported once, and no worker inherits the parent's
    threads or database connections (plain fork would)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _run_pool(
    workers: Workers,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    n_trials: int,
    timeout: float,
    callbacks: Sequence[Callback],
    catch: tuple[type[Exception], ...],
) -> None:
    retries = workers.retries
    ctx = _context()
    slots = ctx.Value("i", n_trials)
    current = ctx.Array("i", [IDLE] * workers.count)
    deadline = time.time() + timeout
    seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
    spec = {
        "sampler": workers.sampler,
        "seed": workers.seed + len(study.get_trials(deepcopy=False)),
        "retries": retries,
        "threads": workers.threads,
        "journal": is_journal(workers.storage),
        "storage": workers.storage,
        "deadline": deadline,
    }
    errors = ctx.SimpleQueue()  # a worker's one line, for this process to print once

    def start(index: int, generation: int) -> multiprocessing.process.BaseProcess:
        args = (index, generation, study, objective, catch, slots, current, spec, errors)
        proc = ctx.Process(target=_worker_main, args=args, name=f"nas-worker-{index}")
        proc.start()
        return proc

    log.info("%d workers x %d threads; %d trials to add", workers.count, workers.threads, n_trials)
    procs = {i: start(i, 0) for i in range(workers.count)}
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
                if proc.exitcode == 2:  # the worker explained its stop in one line
                    raise NasError(
                        errors.get() if not errors.empty() else f"worker {index} stopped"
                    )
                _reclaim(study, current, index, slots, retries, proc.exitcode)
                if slots.value > 0 and time.time() < deadline and restarts < 2 * workers.count:
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
    errors: Any,
) -> None:
    """One pool worker: take a slot, run one trial, repeat until no slot or time is left. A
    user's error (or a full or damaged storage) goes to `errors` as one line, exit code 2."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker {index}: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    redact_logs()
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    import torch

    torch.set_num_threads(spec["threads"])
    # Distinct seeds: workers with one seed would propose the same candidates.
    seed = spec["seed"] + 7919 * (index + 1) + 104729 * generation
    study.sampler = spec["sampler"].build(seed)
    # As `_freeze_heap`, less its 0.2 s collection: a fresh worker's heap holds no garbage yet.
    gc.freeze()
    owned = OwnedObjective(objective, spec["retries"])
    owned.on_start = lambda number: current.__setitem__(index, number)
    signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # SLURM: as on Ctrl-C
    try:
        with storage_errors(spec["storage"]):
            _worker_loop(index, study, owned, catch, slots, current, spec)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        owned.release(study)
        current[index] = IDLE
        os._exit(130)
    except Exception as err:
        line = str(err) if isinstance(err, NasError) else explain(err)
        if line is None:
            raise  # a bug: its traceback
        errors.put(f"worker {index}: {one_line(line)}")
        os._exit(2)


def _worker_loop(
    index: int,
    study: optuna.Study,
    owned: OwnedObjective,
    catch: tuple[type[Exception], ...],
    slots: Any,
    current: Any,
    spec: dict[str, Any],
) -> None:
    """Take a slot, run one trial, until no slot or time is left."""
    while time.time() < spec["deadline"]:
        with slots.get_lock():
            if slots.value <= 0:
                break
            slots.value -= 1
            current[index] = HOLDING
        if spec["journal"]:
            recover_orphans(study, retries=spec["retries"])
        with reported_once(catch):
            study.optimize(
                owned,
                n_trials=1,
                timeout=max(1.0, spec["deadline"] - time.time()),
                catch=catch,
                gc_after_trial=False,
            )
        current[index] = IDLE
