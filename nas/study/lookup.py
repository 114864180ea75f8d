"""Find the studies a reporting command names, the way the search names them.

`study.name=S` (or `study.name=[A,B]`, or a command's own `studies=[A,B]`) plus any search
override composes the same settings as `python -m nas.search`, so `runs_dir=` and
`study.storage=` work alike. Looking a study up never creates one: an unknown name is a one-line
error listing what exists.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from nas.config.compose import load_settings
from nas.config.schema import Settings
from nas.errors import NasError, redact
from nas.study.urls import local_path

if TYPE_CHECKING:  # Optuna loads only once a study is opened: unknown names answer at once
    import optuna

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyRef:
    """Where one study lives, and the settings the search composes for it."""

    name: str
    storage: str
    runs_dir: Path
    settings: Settings

    @property
    def out_dir(self) -> Path:
        return self.runs_dir / self.name


def study_names(overrides: list[str], studies: Any = None) -> tuple[list[str | None], list[str]]:
    """The studies named by `studies=[A,B]` or `study.name=` (a name or a list; default: the
    search's default name), and the overrides left for the search's configuration. Values are
    read with Hydra's own override parser."""
    given: list[Any] = []
    rest = []
    for override in overrides:
        if override.partition("=")[0] == "study.name":
            given = [_override_value(override)]
        else:
            rest.append(override)
    if studies is not None:
        given = [studies]
    flat = [n for value in given for n in (value if isinstance(value, list) else [value])]
    names = list(dict.fromkeys(str(n).strip().strip("'\"") for n in flat))
    names = [n for n in names if n]
    if given and not names:
        raise NasError("no study name given; pass study.name=NAME or studies=[A,B]")
    return (list(names) or [None]), rest


def _override_value(override: str) -> Any:
    try:
        value = OverridesParser.create().parse_override(override).value()
    except HydraException as err:
        raise NasError(f"cannot read override: {str(err).splitlines()[0]}") from None
    return list(value.list) if hasattr(value, "list") else value  # `A,B`: Hydra's sweep form


def resolve(overrides: list[str], studies: Any = None) -> list[StudyRef]:
    """The studies the arguments name, each with the settings the search composes for it."""
    names, rest = study_names(overrides, studies)
    refs = []
    for name in names:
        settings = load_settings([*rest, *([f"study.name={name}"] if name else [])])
        study = settings.study
        refs.append(StudyRef(study.name, study.storage, Path(settings.runs_dir), settings))
    return refs


def known_studies(runs_dir: Path) -> list[str]:
    """Names of the studies stored under `runs_dir` (default storage layout).

    Read with the standard library from the `studies` table of Optuna's RDB schema: opening each
    file through Optuna would import it and run its schema check (about a second per database)
    only to print names in an error line."""
    names: set[str] = set()
    for db in sorted(runs_dir.glob("*/study.db")):
        try:
            with closing(sqlite3.connect(_read_only_uri(db), uri=True)) as con:
                names.update(row[0] for row in con.execute("SELECT study_name FROM studies"))
        except sqlite3.Error:  # an unreadable or foreign file is not a study: skip it
            log.debug("skipping %s", db, exc_info=True)
    return sorted(names)


def _read_only_uri(db: Path) -> str:
    """A URI that reads `db` without leaving anything behind. While a search has the database
    open, its write-ahead log holds the newest rows and the shared-memory file exists: read
    both (`mode=ro`). Otherwise `immutable=1`: a read-only WAL connection would create the
    -wal and -shm files that nobody else is there to remove."""
    wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
    live = wal.is_file() and wal.stat().st_size > 0 and shm.is_file()
    return f"{db.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"


def load(ref: StudyRef) -> optuna.Study:
    """Load an existing study read-only in spirit (nothing is written); NasError if absent."""
    path = local_path(ref.storage)
    if path is not None and not path.is_file():
        raise NasError(_missing(ref))
    from nas.study.storage import open_storage, storage_errors

    storage = open_storage(ref.storage)
    with storage_errors(ref.storage, opening=True):
        return _load(ref, storage, path)


def _load(ref: StudyRef, storage: optuna.storages.BaseStorage, path: Path | None) -> optuna.Study:
    import optuna

    try:
        return optuna.load_study(study_name=ref.name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage=storage)
        if path is None or path.name != "study.db":
            raise NasError(
                f"no study '{ref.name}' in {redact(ref.storage)}; it holds: "
                f"{', '.join(names) or 'no studies'}"
            ) from None
        raise NasError(_missing(ref)) from None


def _missing(ref: StudyRef) -> str:
    found = known_studies(ref.runs_dir)
    where = f"{ref.runs_dir}/"
    if not found:
        return (
            f"no study '{ref.name}': {where} holds no studies yet; run python -m nas.search "
            "first, or pass runs_dir=PATH / study.storage=URL"
        )
    return (
        f"no study '{ref.name}' in {where}; it holds: {', '.join(found)} "
        "(pass study.name=NAME, or runs_dir=PATH / study.storage=URL)"
    )
