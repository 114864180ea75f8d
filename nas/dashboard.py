"""`python -m nas.dashboard study.name=S`: browse a study in optuna-dashboard.

Finds the study the way the search stored it (same overrides: `runs_dir=`, `study.storage=`),
then serves optuna-dashboard on localhost. Equivalent to
`optuna-dashboard sqlite:///runs/S/study.db`; trial user attrs (arch, compression, metrics,
learning_curve, skipped) show as JSON on each trial's page.
"""

from __future__ import annotations

import logging

import optuna

from nas.errors import NasError, redact, run_cli
from nas.lookup import load, resolve, split_args
from nas.study import open_storage

log = logging.getLogger(__name__)

USAGE = """usage: python -m nas.dashboard study.name=NAME [host=127.0.0.1] [port=8080]

Serves optuna-dashboard for the study's storage (Ctrl-C stops it).
  runs_dir=PATH, study.storage=URL   find the study as python -m nas.search stored it"""


def dashboard_url(host: str, port: int, study_id: int) -> str:
    return f"http://{host}:{port}/dashboard/studies/{study_id}"


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides, own = split_args(argv, ("host", "port"))
    refs = resolve(overrides, own)
    if len(refs) != 1:
        raise NasError("the dashboard opens one storage; name one study (study.name=NAME)")
    ref = refs[0]
    load(ref)  # one-line error for an unknown study, and never creates one
    storage = open_storage(ref.storage)  # an object: journal:/// URLs are ours, not the dashboard's
    study_id = storage.get_study_id_from_name(ref.name)
    host = own.get("host", "127.0.0.1")
    try:
        port = int(own.get("port", "8080"))
    except ValueError:
        raise NasError(f"port must be a number, got {own['port']!r}") from None
    from optuna_dashboard import run_server  # deferred: only this command needs it

    print(f"optuna-dashboard for {redact(ref.storage)}: {dashboard_url(host, port, study_id)}")
    try:
        run_server(storage, host=host, port=port)
    except OSError as err:
        raise NasError(f"cannot serve on {host}:{port}: {err.strerror}; pick port=N") from None
    return 0


if __name__ == "__main__":
    run_cli(main)
