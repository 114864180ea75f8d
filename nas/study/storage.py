"""Where a study lives: Optuna storages behind `study.storage` URLs, and what each one takes."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from nas.errors import NasError, redact

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal:///"  # Optuna's JournalStorage on a local file (several local writers)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def local_path(url: str) -> Path | None:
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    return None


def prepare_storage(url: str) -> str:
    """Create the folder of a SQLite or journal file; refuse storages that cannot be written."""
    path = local_path(url)
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

    - `sqlite:///FILE`: one writing process at a time (`nas.study.lock.StudyLock` enforces it).
    - `journal:///FILE`: Optuna's JournalStorage; several processes on one machine.
    - any other RDB URL (`postgresql://...`): many machines; a worker that stops sending
      heartbeats for `grace_s` seconds has its trial failed and re-queued (`retries` times).
    """
    prepare_storage(url)
    try:
        if is_journal(url):
            backend = optuna.storages.journal.JournalFileBackend(str(local_path(url)))
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
