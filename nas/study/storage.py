"""Where a study lives: Optuna storages behind `study.storage` URLs, what each one takes, and
what a storage's failure means to the user (`storage_error`: one line; registered with
`nas.errors.explain_with`, so every command turns a full or damaged study database into it)."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError

from nas.errors import (
    NasError,
    explain_with,
    free_mb,
    out_of_space,
    redact,
    remember_secrets,
)
from nas.study.urls import JOURNAL_PREFIX as JOURNAL_PREFIX  # re-exported with the helpers
from nas.study.urls import is_journal, is_sqlite, local_path

log = logging.getLogger(__name__)


def prepare_storage(url: str) -> str:
    """Create the folder of a SQLite or journal file; refuse storages that cannot be written."""
    path = local_path(url)
    if path is not None:
        if path.name in ("", ".", "..") or path.is_dir() or (path.exists() and not path.is_file()):
            folder = path.is_dir() or path.name in ("", ".", "..")
            what = "a folder" if folder else "a device, pipe or socket"
            raise NasError(
                f"study.storage={redact(url)} names {what}, not a database file: give "
                "sqlite:///PATH/study.db or journal:///PATH/study.journal"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A probe of its own: workers starting together on one folder would otherwise
            # delete each other's probe and refuse a writable folder.
            with tempfile.TemporaryFile(dir=path.parent, prefix=".write-test-"):
                pass
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


def _drop_partial_record(path: str) -> None:
    """An append cut short (a full disk, a crash mid-write) leaves a journal whose last line is
    incomplete; Optuna would append after it and then fail to read the file. Drop that line,
    under the journal's own lock, before anything appends: its write never completed."""
    if not os.path.isfile(path) or not os.path.getsize(path):
        return
    lock = optuna.storages.journal.JournalFileSymlinkLock(path)
    lock.acquire()
    try:
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            end = size
            while end > 0:  # back to the last complete line, one block at a time
                start = max(0, end - 65536)
                handle.seek(start)
                block = handle.read(end - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
            handle.truncate(end)
        log.warning("dropped the incomplete last record of %s (a write cut short)", path)
    finally:
        lock.release()


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
    remember_secrets(url)
    prepare_storage(url)
    _OPENED.append(url)
    try:
        if is_journal(url):
            path = str(local_path(url))
            _drop_partial_record(path)
            backend = optuna.storages.journal.JournalFileBackend(path)
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
        raise NasError(storage_error(err, url, opening=True)) from None
    except OSError as err:
        raise NasError(f"cannot open study storage {redact(url)}: {err.strerror}") from None


# -- what a storage failure means ------------------------------------------------------------------
_OPENED: list[str] = []  # storages this process opened, the latest last
_DAMAGED = ("malformed", "not a database", "file is encrypted")


def _reason(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _sqlite_error(err: BaseException) -> sqlite3.Error | None:
    orig = getattr(err, "orig", err)
    return orig if isinstance(orig, sqlite3.Error) else None


def _sqlite_advice(url: str, reason: str) -> str | None:
    """One line for what SQLite says about the file behind `url`, or None."""
    path = local_path(url) or Path("study.db")
    lowered = reason.lower()
    if "database or disk is full" in lowered:
        free = free_mb(path)
        left = f", {free:.1f} MB free" if free is not None else ""
        return (
            f"runs_dir is out of space: the study database {path} is full{left}; finished "
            "trials are safe: free space (or move the study to another disk), then run the "
            "same command again"
        )
    if any(word in lowered for word in _DAMAGED):
        recovered = path.with_name("recovered.db")
        return (
            f"the study database {path} is damaged ({reason}): keep a copy, recover what it "
            f"holds with `sqlite3 {path} .recover | sqlite3 {recovered}` (or .dump where your "
            f"sqlite3 lacks .recover) and pass study.storage=sqlite:///{recovered}, or pick a "
            "new study.name"
        )
    if "database is locked" in lowered:
        return (
            f"the study database {path} is locked by another process; wait for it, or run "
            "several workers on study.storage=journal:///FILE or postgresql://..."
        )
    if "readonly" in lowered or "unable to open" in lowered or "i/o error" in lowered:
        return (
            f"cannot use the study database {path} ({reason}): check that the file and its "
            "folder are writable, or pass runs_dir=PATH / study.storage=URL"
        )
    return None


def storage_error(err: BaseException, url: str, *, opening: bool = False) -> str:
    """The one line for a storage failure: SQLite gets advice about its file (full, damaged,
    locked, read-only), a server gets advice about the connection."""
    reason = _reason(err)
    if is_sqlite(url) or _sqlite_error(err) is not None:
        advice = _sqlite_advice(url, reason)
        if advice is not None:
            return advice
        return f"study database {redact(url)} failed: {redact(reason)}"
    if opening:
        return (
            f"cannot open study storage {redact(url)}: {redact(reason)}; check study.storage "
            "(server running? user, password and database right? driver installed?)"
        )
    return (
        f"lost the study storage {redact(url)}: {redact(reason)}; finished trials are safe, "
        "run the same command again to resume"
    )


@explain_with
def explain_storage(err: BaseException) -> str | None:
    """For `run_cli`: a storage failure anywhere in a command, as one line."""
    if not isinstance(err, SQLAlchemyError) and _sqlite_error(err) is None:
        return None
    url = _OPENED[-1] if _OPENED else "sqlite:///study.db"
    if is_sqlite(url) or _sqlite_error(err) is not None:
        return _sqlite_advice(url, _reason(err))
    if isinstance(err, sqlalchemy.exc.OperationalError):  # the server went away
        return storage_error(err, url)
    return None


@contextlib.contextmanager
def storage_errors(url: str, *, opening: bool = False) -> Iterator[None]:
    """Turn a storage failure inside the block into one `NasError` line (see `storage_error`)."""
    try:
        yield
    except SQLAlchemyError as err:
        raise NasError(storage_error(err, url, opening=opening)) from None
    except OSError as err:  # a journal file on a full disk
        path = local_path(url)
        if path is None or err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise NasError(
            f"{out_of_space(path)}; finished trials are safe: run the same command again"
        ) from None
