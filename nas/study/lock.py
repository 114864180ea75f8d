"""The single-writer lock of a SQLite study (SQLite takes one writing process at a time)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import Any, ClassVar

from nas.errors import NasError
from nas.study.storage import is_sqlite, local_path


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
    path = local_path(url)
    if (
        is_sqlite(url)
        and path is not None
        and path.name != ":memory:"
        and url not in StudyLock.held
    ):
        StudyLock.held[url] = StudyLock(path).__enter__()


def release_study(url: str) -> None:
    lock = StudyLock.held.pop(url, None)
    if lock is not None:
        lock.__exit__()
