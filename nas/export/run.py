"""`run_export(argv)`: export the trials the arguments name (the plain function behind
`python -m nas.export`; tests call it)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.cli import configure_logging, split_own
from nas.errors import NasError
from nas.files import check_writable
from nas.study.lookup import load, resolve

if TYPE_CHECKING:
    from nas.export.write import Exported

log = logging.getLogger("nas.export")


@dataclass
class ExportArgs:
    """The command's own settings; every other `KEY=VALUE` finds the study as the search does."""

    trial: str = ""  # N | pareto | best:METRIC
    out: str = ""  # default: <runs_dir>/<study>/export/<trial-N | pareto>
    force: bool = False  # write into an existing, non-empty out
    onnx: bool = True  # write and check model.onnx
    parent: str = ""  # a prune study's parent, when not where the search found it
    studies: Any = None  # refused: export reads one study


def _check_out(out: Path, force: bool) -> None:
    """Refuse an `out` that cannot take the export, before anything is written."""
    if out.exists() and not out.is_dir():
        raise NasError(f"out={out} is a file; pass out=DIR for a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NasError(f"out={out} exists and is not empty; pass force=true or another out=DIR")
    check_writable(out, "out")


@contextlib.contextmanager
def _removed_unless_done(out: Path) -> Iterator[None]:
    """Folders this export creates for `out` are removed again when it stops half-way (an
    error, Ctrl-C, SIGTERM) and they hold nothing: no empty output is left behind."""
    created = []
    folder = out
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty: a finished trial-N/ stays
        raise


def run_export(argv: list[str]) -> list[Exported]:
    """Export the trials `argv` names, one directory each."""
    args, overrides = split_own(argv, ExportArgs)
    if args.studies is not None:
        raise NasError("export reads one study; pass study.name=NAME")
    ref = resolve(overrides)[0]
    study = load(ref)
    from nas.export.pick import pick_trials, summary  # deferred: Optuna loads with the study

    configure_logging()

    if not args.trial:
        raise NasError(f"pass trial=N, trial=pareto or trial=best:bpb; {summary(study)}")
    trials = pick_trials(study, args.trial)
    default = "pareto" if args.trial == "pareto" else f"trial-{trials[0].number}"
    out = Path(args.out or ref.out_dir / "export" / default)
    _check_out(out, args.force)
    if args.trial == "pareto":
        targets = [(t, out / f"trial-{t.number}") for t in trials]
    else:
        targets = [(trials[0], out)]
    from nas.export.write import export_trial  # deferred: transformers loads here

    done = []
    with _removed_unless_done(out):
        for trial, path in targets:
            log.info("exporting trial %d of %s to %s", trial.number, study.study_name, path)
            with _removed_unless_done(path):
                done.append(
                    export_trial(study, ref, trial, path, onnx=args.onnx, parent=args.parent)
                )
    return done
