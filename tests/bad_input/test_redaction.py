"""No password reaches the screen: awkward URLs, `--cfg`, log lines, a bug's traceback, a real
process. And what run_cli makes of library errors (a full disk) and of bugs."""

from __future__ import annotations

import errno
import io
import logging
import subprocess
import sys

import pytest

from nas.cli import configure_logging
from nas.errors import MASK, NasError, passwords, redact, remember_secrets, run_cli
from nas.search.__main__ import main
from tests.bad_input.conftest import Stored
from tests.bad_input.sweep import SECRET, settle

S = SECRET
URLS = [  # (url, what must remain visible)
    (f"postgresql://nas:{S}@db.example.org/nas", "postgresql://nas:***@db.example.org/nas"),
    (f"postgresql://:{S}@db/nas", "postgresql://:***@db/nas"),  # empty user name
    (f"postgresql://nas:p@{S}@db/nas", "postgresql://nas:***@db/nas"),  # unencoded @
    (f"postgresql://nas:{S}@x@db:5432/nas", "postgresql://nas:***@db:5432/nas"),
    (f"postgresql://nas:a/{S}@db/nas", "postgresql://nas:***@db/nas"),  # unencoded /
    (f"postgresql://nas:a?{S}@db/nas", "postgresql://nas:***@db/nas"),  # unencoded ?
    (f"postgresql://nas:a#{S}@db/nas", "postgresql://nas:***@db/nas"),  # unencoded #
    (f"postgresql://nas:a:{S}@db/nas", "postgresql://nas:***@db/nas"),  # unencoded :
    (f"postgresql://nas:{S}%40x@db/nas", "postgresql://nas:***@db/nas"),  # percent-encoded
    (f"postgresql+psycopg2://nas:{S}@[::1]:5432/nas", "postgresql+psycopg2://nas:***@[::1]:5432"),
    (f"mysql+pymysql://root:{S}@localhost/optuna", "mysql+pymysql://root:***@localhost/optuna"),
    (f"postgresql://nas@db/nas?password={S}", "postgresql://nas@db/nas?password=***"),
    (f"postgresql://db/nas?sslmode=require&password={S}&x=1", "?sslmode=require&password=***&x=1"),
    (f"postgresql://db/nas?sslpassword={S}", "?sslpassword=***"),
    (f"https://host/api?token={S}", "https://host/api?token=***"),
    (f"(postgresql://nas:{S}@db/nas).", "(postgresql://nas:***@db/nas)."),  # in a sentence
    (f"'postgresql://nas:{S}@db/nas'", "'postgresql://nas:***@db/nas'"),  # quoted
    (f"host=db user=nas password={S} dbname=nas", "host=db user=nas password=*** dbname=nas"),
    (f"password='{S} with spaces' host=db", "password=*** host=db"),
    ("sqlite:///runs/a@b/study.db", "sqlite:///runs/a@b/study.db"),  # no secret: unchanged
    ("journal:///runs/x/study.journal", "journal:///runs/x/study.journal"),
    ("postgresql://nas@db/nas", "postgresql://nas@db/nas"),
]


@pytest.mark.parametrize(("url", "shown"), URLS, ids=[f"url-{i}" for i in range(len(URLS))])
def test_redact_hides_every_secret_and_keeps_the_rest(url: str, shown: str) -> None:
    clean = redact(f"cannot open {url} now")
    assert SECRET not in clean and "s3cr" not in clean
    assert shown in clean and clean.startswith("cannot open ") and clean.endswith(" now")


def test_a_remembered_password_is_hidden_wherever_it_shows() -> None:
    remember_secrets(f"postgresql://nas:{SECRET}%21@db/nas")
    assert set(passwords(f"postgresql://nas:{SECRET}%21@db/nas")) == {f"{SECRET}%21", f"{SECRET}!"}
    echoed = f'FATAL: password "{SECRET}!" rejected, dsn password {SECRET}%21'
    assert SECRET not in redact(echoed) and MASK in redact(echoed)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://:{S}@db/nas",
        f"postgresql://u:p@{S}@db/nas",
        f"postgresql://u@db/nas?password={S}",
    ],
    ids=["empty-user", "at-sign", "query"],
)
def test_printed_config_hides_the_password(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        run_cli(main, ["budget=smoke", f"study.storage='{url}'", "--cfg"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "storage: postgresql://" in out and SECRET not in out


def test_log_lines_and_optuna_lines_are_redacted() -> None:
    """`configure_logging` puts the filter on every handler of the root logger and of Optuna's
    (which keeps its records to itself)."""
    url = f"postgresql://u:{SECRET}@db/nas"
    stream = io.StringIO()
    loggers = [logging.getLogger(), logging.getLogger("optuna")]
    handlers = [logging.StreamHandler(stream) for _ in loggers]
    for logger, handler in zip(loggers, handlers, strict=True):
        logger.addHandler(handler)
    try:
        configure_logging()
        logging.getLogger("nas.test").warning("lost %s", url)
        logging.getLogger("optuna.storages").warning("heartbeat to %s failed", url)
        try:
            raise RuntimeError(f"connect to {url}")
        except RuntimeError:
            logging.getLogger("nas.test").exception("with a traceback")
    finally:
        for logger, handler in zip(loggers, handlers, strict=True):
            logger.removeHandler(handler)
    text = stream.getvalue()
    assert "lost postgresql://u:***@db/nas" in text and "heartbeat to postgresql://u:***@db" in text
    assert "RuntimeError: connect to postgresql://u:***@db/nas" in text and SECRET not in text


def test_a_bugs_traceback_is_printed_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    def buggy(argv: list[str]) -> int:
        raise RuntimeError(f"bug near postgresql://u:{SECRET}@db/nas")

    with pytest.raises(SystemExit) as done:
        run_cli(buggy, [])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" in err and SECRET not in err


def test_a_full_disk_anywhere_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def writes(argv: list[str]) -> int:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/tmp/x/model.onnx")
        except OSError as err:
            raise RuntimeError("export failed") from err  # as a library may wrap it

    with pytest.raises(SystemExit) as done:
        run_cli(writes, [])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("error: runs_dir is out of space writing")
    assert len(err.splitlines()) == 1 and "runs_dir=PATH" in err


def test_a_nas_error_stays_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def refuses(argv: list[str]) -> int:
        raise NasError("first\nsecond   third")

    with pytest.raises(SystemExit):
        run_cli(refuses, [])
    assert capsys.readouterr().err == "error: first second third\n"


def test_a_real_process_prints_one_line_without_the_password(stored: Stored) -> None:
    url = f"postgresql://nas:{SECRET}@127.0.0.1:1/test"
    before = (stored.runs / "B" / "study.db").read_bytes()
    run = subprocess.run(
        [sys.executable, "-m", "nas.search", *stored.base, f"study.storage={url}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open study storage")
    assert SECRET not in run.stderr + run.stdout
    settle(stored.runs / "B" / "study.db")
    assert (stored.runs / "B" / "study.db").read_bytes() == before
