"""`python -m nas.dashboard study.name=S`: browse a study in optuna-dashboard.

Finds the study the way the search stored it (same overrides: `runs_dir=`, `study.storage=`),
then serves optuna-dashboard on localhost. Equivalent to
`optuna-dashboard sqlite:///runs/S/study.db`; trial user attrs (arch, compression, metrics,
learning_curve, skipped) show as JSON on each trial's page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.cli import split_own, wants_help
from nas.config.rules import between
from nas.errors import NasError, redact, run_cli

USAGE = """usage: python -m nas.dashboard study.name=NAME [host=127.0.0.1] [port=8080]

Serves optuna-dashboard for the study's storage (Ctrl-C stops it).
  runs_dir=PATH, study.storage=URL   find the study as python -m nas.search stored it"""


@dataclass
class DashboardArgs:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=between(1, 65535))
    studies: Any = None  # refused: the dashboard opens one storage


def dashboard_url(host: str, port: int, study_id: int) -> str:
    return f"http://{host}:{port}/dashboard/studies/{study_id}"


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    args, overrides = split_own(argv, DashboardArgs)  # before optuna loads: errors answer at once
    from nas.study.lookup import load, resolve

    refs = resolve(overrides, args.studies)
    if len(refs) != 1:
        raise NasError("the dashboard opens one storage; name one study (study.name=NAME)")
    ref = refs[0]
    load(ref)  # one-line error for an unknown study, and never creates one
    import optuna

    from nas.study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(ref.storage)  # an object: journal:/// URLs are ours, not the dashboard's
    study_id = storage.get_study_id_from_name(ref.name)
    from optuna_dashboard import run_server  # deferred: only this command needs it

    url = dashboard_url(args.host, args.port, study_id)
    print(f"optuna-dashboard for {redact(ref.storage)}: {url}")
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as err:
        raise NasError(
            f"cannot serve on {args.host}:{args.port}: {err.strerror}; pick port=N"
        ) from None
    return 0


if __name__ == "__main__":
    run_cli(main)
