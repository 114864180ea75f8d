"""Find the studies a reporting command names, the way the search names them.

`study.name=S` (or `study.name=[A,B]`, or `studies=[A,B]`) plus any search override composes the
same configuration as `python -m nas.search`, so `runs_dir=` and `study.storage=` work alike.
Looking a study up never creates one: an unknown name is a one-line error listing what exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig

from nas.config import compose_config
from nas.errors import NasError, redact
from nas.study import _local_path, open_storage

log = logging.getLogger(__name__)

NAME_KEYS = ("study.name", "studies")


@dataclass(frozen=True)
class StudyRef:
    """Where one study lives, and its composed configuration."""

    name: str
    storage: str
    runs_dir: Path
    cfg: DictConfig

    @property
    def out_dir(self) -> Path:
        return self.runs_dir / self.name


def split_args(argv: list[str], own_keys: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Separate the command's own `KEY=VALUE`s (e.g. `out=`) from the search's overrides."""
    overrides: list[str] = []
    own: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in (*own_keys, *NAME_KEYS):
            own[key] = value
        else:
            overrides.append(arg)
    return overrides, own


def parse_names(value: str) -> list[str]:
    """`A`, `[A,B]` or `A,B` -> the names, in order, without repeats."""
    inner = value.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    names = [n.strip().strip("'\"") for n in inner.split(",")]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise NasError(f"no study name in '{value}'; pass study.name=NAME or studies=[A,B]")
    return names


def resolve(overrides: list[str], own: dict[str, str]) -> list[StudyRef]:
    """The studies named by `study.name=`/`studies=` (default: the search's default name)."""
    raw = own.get("studies") or own.get("study.name")
    names = parse_names(raw) if raw else [None]
    refs = []
    for name in names:
        cfg = compose_config([*overrides, *([f"study.name={name}"] if name else [])])
        refs.append(
            StudyRef(str(cfg.study.name), str(cfg.study.storage), Path(str(cfg.runs_dir)), cfg)
        )
    return refs


def known_studies(runs_dir: Path) -> list[str]:
    """Names of the studies stored under `runs_dir` (default storage layout)."""
    names: set[str] = set()
    for db in sorted(runs_dir.glob("*/study.db")):
        try:
            names.update(optuna.get_all_study_names(storage=f"sqlite:///{db}"))
        except Exception:  # an unreadable or foreign file is not a study: skip it
            log.debug("skipping %s", db, exc_info=True)
    return sorted(names)


def load(ref: StudyRef) -> optuna.Study:
    """Load an existing study read-only in spirit (nothing is written); NasError if absent."""
    path = _local_path(ref.storage)
    if path is not None and not path.is_file():
        raise NasError(_missing(ref))
    storage = open_storage(ref.storage)
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
