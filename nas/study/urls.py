"""What a `study.storage` URL names, read without opening it (nor importing Optuna)."""

from __future__ import annotations

from pathlib import Path

JOURNAL_PREFIX = "journal:///"  # Optuna's JournalStorage on a local file (several local writers)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def is_journal(url: str) -> bool:
    return url.startswith(JOURNAL_PREFIX)


def local_path(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for a server)."""
    for prefix in ("sqlite:///", JOURNAL_PREFIX):
        if url.startswith(prefix):
            return Path(url.removeprefix(prefix))
    return None
