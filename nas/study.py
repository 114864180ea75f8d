"""The Optuna study: storage, sampler, constraints, and the identity a resumed study must keep."""

from __future__ import annotations

import fcntl
import importlib.util
import inspect
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import optuna
import sqlalchemy
from hydra.utils import instantiate
from omegaconf import DictConfig
from sqlalchemy.exc import SQLAlchemyError

from nas.errors import NasError, redact

log = logging.getLogger(__name__)

OBJECTIVES = ("bpb", "decode_ms", "memory_mb")  # all minimised


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Within every device limit. Constraints are set per trial with `Trial.set_constraint`
    (Optuna 5 deprecates the sampler's `constraints_func`; its samplers read these instead)."""
    return all(v <= 0 for v in trial.constraints.values())


JOURNAL_PREFIX = "journal:///"  # Optuna's JournalStorage on a local file (several local writers)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def _local_path(url: str) -> Path | None:
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    return None


def prepare_storage(url: str) -> str:
    """Create the folder of a SQLite or journal file; refuse storages that cannot be written."""
    path = _local_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe = path.parent / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise NasError(
                f"cannot write the study database folder {path.parent}: {err.strerror}; "
                "pass runs_dir=PATH (or study.storage=URL) somewhere writable"
            ) from None
    return url


def _with_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; we ship psycopg2, so name it."""
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


class StudyLock:
    """An exclusive lock on a SQLite study, held by the one process that may write it.

    Taken by `open_study`, released by `release_study` when the run ends (or at process exit);
    re-entrant within a process, so a test may run the same study twice in one process.
    """

    held: ClassVar[dict[str, StudyLock]] = {}

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self.handle: Any = None

    def __enter__(self) -> StudyLock:
        try:
            self.handle = open(self.path, "a+")
        except OSError as err:
            raise NasError(f"cannot write {self.path}: {err.strerror}; pick runs_dir") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise NasError(
                f"the study in {self.path.with_suffix('')} is being searched by {holder}; "
                "SQLite takes one writer: wait for it, or run several workers on "
                "study.storage=journal:///FILE (one machine) or postgresql://... (many)"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def lock_study(url: str) -> None:
    """Take the single-writer lock of a SQLite study (no-op for other storages)."""
    path = _local_path(url)
    if (
        is_sqlite(url)
        and path is not None
        and path.name != ":memory:"
        and url not in StudyLock.held
    ):
        StudyLock.held[url] = StudyLock(path).__enter__()  # type: ignore[arg-type]


def release_study(url: str) -> None:
    lock = StudyLock.held.pop(url, None)
    if lock is not None:
        lock.__exit__()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: a commit appends to the log instead of rewriting pages, readers never block the
    # writer, and a killed process loses nothing committed. synchronous=NORMAL: no fsync per
    # commit (an Optuna trial makes ~40), only at checkpoints; a power cut may lose the last
    # commits, never corrupt the file.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _fast_sqlite(storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # connections opened while creating the tables get them too
    return storage


def retry_callback(retries: int) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Re-queues a dead worker's trial (same parameters, WAITING) up to `retries` times."""
    return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)


def open_storage(
    url: str, *, heartbeat_s: int = 10, grace_s: int = 30, retries: int = 2
) -> optuna.storages.BaseStorage:
    """The Optuna storage behind `url`.

    - `sqlite:///FILE`: one writing process at a time (`nas.workers.StudyLock` enforces it).
    - `journal:///FILE`: Optuna's JournalStorage; several processes on one machine.
    - any other RDB URL (`postgresql://...`): many machines; a worker that stops sending
      heartbeats for `grace_s` seconds has its trial failed and re-queued (`retries` times).
    """
    prepare_storage(url)
    try:
        if is_journal(url):
            backend = optuna.storages.journal.JournalFileBackend(str(_local_path(url)))
            return optuna.storages.JournalStorage(backend)
        if is_sqlite(url):
            return _fast_sqlite(optuna.storages.RDBStorage(url))
        connect = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        return optuna.storages.RDBStorage(
            _with_driver(url),
            engine_kwargs={"pool_pre_ping": True, "connect_args": connect},
            heartbeat_interval=heartbeat_s,
            grace_period=grace_s,
            heartbeat_stale_trial_callback=retry_callback(retries),
        )
    except (SQLAlchemyError, ImportError, ValueError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise NasError(
            f"cannot open study storage {redact(url)}: {redact(reason)}; check study.storage "
            "(server running? user, password and database right? driver installed?)"
        ) from None
    except OSError as err:
        raise NasError(f"cannot open study storage {redact(url)}: {err.strerror}") from None


def record(
    trial: optuna.Trial, attrs: Mapping[str, Any], constraints: Mapping[str, float] | None = None
) -> None:
    """Set a running trial's user attributes and constraints in one storage transaction.

    Optuna's API commits once per attribute and reads the trial back before each constraint; a
    trial here sets about a dozen, and with a thousand stored trials those round trips were a
    third of the engine's time per trial. On an RDB storage (SQLite, PostgreSQL) they go through
    the storage's own row writer in one transaction, on a journal file in one append (one lock,
    one fsync); other storages take them one at a time.
    `tests/test_study.py` checks that both paths store the same trial.
    """
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    if not attrs and not constraints:
        return
    constraints = {key: float(value) for key, value in (constraints or {}).items()}
    system = {f"{_CONSTRAINTS_KEY}:{key}": value for key, value in constraints.items()}
    storage = trial.storage
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(backend, optuna.storages.RDBStorage):
        with _create_scoped_session(backend.scoped_session) as session:
            for model, values in (
                (models.TrialUserAttributeModel, attrs),
                (models.TrialSystemAttributeModel, system),
            ):
                for key, value in values.items():
                    backend._set_trial_attr_without_commit(
                        session, model, trial._trial_id, key, value
                    )
    elif isinstance(backend, optuna.storages.JournalStorage):
        _journal_record(backend, trial._trial_id, attrs, system)
    else:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        return
    # The trial's own view, as `Trial.set_user_attr` and `Trial.set_constraint` keep it.
    trial._cached_frozen_trial.user_attrs.update(attrs)
    trial._cached_frozen_trial.system_attrs.update(system)


def _journal_record(
    storage: optuna.storages.JournalStorage,
    trial_id: int,
    attrs: Mapping[str, Any],
    system: Mapping[str, Any],
) -> None:
    """The journal's own log entries, one per attribute as its `set_trial_*_attr` writes them,
    appended in one locked, fsynced write instead of one each."""
    from optuna.storages.journal._storage import JournalOperation

    worker = storage._replay_result.worker_id
    logs = [
        {"op_code": op, "worker_id": worker, "trial_id": trial_id, field: {key: value}}
        for op, field, values in (
            (JournalOperation.SET_TRIAL_USER_ATTR, "user_attr", attrs),
            (JournalOperation.SET_TRIAL_SYSTEM_ATTR, "system_attr", system),
        )
        for key, value in values.items()
    ]
    with storage._thread_lock:
        storage._backend.append_logs(logs)
        storage._sync_with_backend()


def make_sampler(
    cfg: DictConfig, seed: int, *, parallel: bool = True
) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded where the sampler takes a seed.

    `parallel=False` (one process writes the study) turns TPE's constant liar off unless the
    config sets it: with no other trial running it changes nothing, yet it makes TPE re-read
    the storage once per parameter group instead of once per trial (6 reads a trial here).
    """
    target = instantiate(cfg, _partial_=True)
    accepted = inspect.signature(target.func).parameters
    extra: dict[str, Any] = {"seed": seed} if "seed" in accepted else {}
    if not parallel and "constant_liar" in accepted and "constant_liar" not in cfg:
        extra["constant_liar"] = False
    return target(**extra)


def open_study(
    *,
    name: str,
    storage: str,
    sampler_cfg: DictConfig,
    seed: int,
    identity: dict[str, Any],
    heartbeat_s: int = 10,
    grace_s: int = 30,
    retries: int = 2,
) -> optuna.Study:
    """Create the study, or load it to resume; a resumed study must match `identity`.

    The sampler's seed is offset by the trials already stored, so that a resumed study does not
    replay the first run's random start-up samples. See `open_storage` for the storage kinds.
    """
    backend = open_storage(storage, heartbeat_s=heartbeat_s, grace_s=grace_s, retries=retries)
    lock_study(storage)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=backend,
            sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trials are known
            directions=["minimize"] * len(OBJECTIVES),
            load_if_exists=True,
        )
        n_stored = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(sampler_cfg, seed + n_stored, parallel=not is_sqlite(storage))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise NasError(f"cannot open study storage {redact(storage)}: {redact(reason)}") from None
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_metric_names(list(OBJECTIVES))
    else:
        changed = sorted(k for k in identity if k in stored and stored[k] != identity[k])
        if changed:
            raise NasError(
                f"study '{name}' was started with other settings ({', '.join(changed)} differ); "
                "pick a new study.name or run with the original settings"
            )
    return study
