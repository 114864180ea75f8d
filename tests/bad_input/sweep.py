"""The bad-input sweep's machinery: a case is a command, its arguments, the exit code and a
fragment of the one line it must print; `check` runs it in this process through `run_cli`, as
`python -m nas.X` would, and asserts the line, the code, no password, and an unchanged study."""

from __future__ import annotations

import contextlib
import gc
import importlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nas.errors import run_cli

SECRET = "s3cr3t-pw"
COMMANDS = ("search", "export", "report", "dashboard", "calibrate", "predict", "train", "bench")
SKIPPED = (".lock", "-shm")  # the writer's lock (holder pid) and SQLite's shared-memory index


@dataclass(frozen=True)
class Case:
    command: str
    args: tuple[str, ...]
    fragment: str
    code: int = 2
    study: bool = True  # aimed at the stored study: its arguments come first


def case(
    command: str,
    *args: str,
    expect: str,
    code: int = 2,
    study: bool = True,
    id: str,
    marks: Sequence[Any] = (),
) -> Any:
    """One row of a sweep table (`{bad}`, `{runs}`, `{secret}` are filled in when it runs)."""
    assert command in COMMANDS, command
    return pytest.param(Case(command, args, expect, code, study), id=id, marks=marks)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes (the writer's lock aside, and an empty SQLite
    write-ahead log, which comes and goes with each connection)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.name.endswith(SKIPPED)
        and not (p.name.endswith("-wal") and not p.stat().st_size)
    }


def settle(db: Path) -> None:
    """Close this process's idle connections to `db` and move its write-ahead log into it, so
    that its bytes change only when something writes to the study."""
    wal = db.with_name(db.name + "-wal")
    if not wal.is_file() or not wal.stat().st_size:
        return  # nothing waits to be moved in
    for _ in range(5):  # a reader still open blocks the checkpoint: collect, then try again
        gc.collect()  # an engine left by an earlier run closes its connections (and checkpoints)
        with contextlib.closing(sqlite3.connect(db)) as connection:
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.2)
    raise AssertionError(f"{db}'s write-ahead log could not be checkpointed: a reader holds it")


def run(command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`python -m nas.<command> ARGV` in this process: its exit code and stderr."""
    main = importlib.import_module(f"nas.{command}.__main__").main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_cli(main, argv)
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err, "a password was printed"
    return int(exited.value.code or 0), captured.err.strip()


def check(
    item: Case,
    study_args: dict[str, list[str]],
    values: dict[str, str],
    runs: Path,
    capsys: pytest.CaptureFixture[str],
) -> str:
    """Run `item`; assert its exit code, one line holding its fragment, and that nothing under
    `runs` (the stored study, its front, tokenizer and database) changed. Returns the line."""
    for db in runs.glob("*/study.db"):
        settle(db)
    before = tree(runs)
    argv = [a.format(**values) for a in item.args]
    if item.study:
        argv = [*study_args[item.command], *argv]
    code, err = run(item.command, argv, capsys)
    lines = err.splitlines()
    assert code == item.code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert item.fragment.format(**values) in lines[0], lines[0]
    after = tree(runs)
    changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    assert not changed, f"a refusal changed the stored study: {changed}"
    return lines[0]
