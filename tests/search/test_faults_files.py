"""Faults in the files under a search, for real: a study database damaged inside a page, a disk
that fills up under the cache and under the study database mid-run, SIGTERM while the tokenizer
trains. Each leaves every trial finished before it, one line, and no partial file."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tokenizers import Tokenizer

from nas.config.compose import load_settings
from nas.errors import NasError
from nas.search.run import run_search
from nas.study.storage import open_storage
from tests.bad_input.sweep import settle

TMP_GLOBS = ("*.tmp", "*.tmp.*", ".*.tmp", ".export-*")


def finished(url: str, name: str) -> dict[int, tuple[float, ...]]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.number: tuple(t.values) for t in done}


def leftovers(*roots: Path) -> list[Path]:
    """Temporary files a write left behind (there must be none)."""
    return [p for root in roots for g in TMP_GLOBS for p in root.rglob(g)]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "3m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mount.returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root); a full disk is not simulated")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)  # -l: SQLite may hold it


def fill(disk: Path) -> Path:
    """Write zeros until the disk is full, to the last byte."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def _index_page(db: Path) -> int:
    """The page of the trials table's study index (damaging it leaves the rows recoverable)."""
    out = subprocess.run(
        ["sqlite3", str(db), "SELECT pageno FROM dbstat WHERE name = 'ix_trials_study_id'"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[0])


def test_a_damaged_page_is_refused_then_recovered_as_advised(
    smoke_overrides: list[str], tiny: list[str], tmp_path: Path
) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command the advice names is not installed")
    args = [*smoke_overrides, *tiny, "study.name=P"]
    settings = load_settings([*args, "study.n_trials=2"])
    run_search(settings)
    url = settings.study.storage
    before = finished(url, "P")
    db = Path(url.removeprefix("sqlite:///"))
    settle(db)  # the run's write-ahead log into the file, so that its bytes are all there is
    data = bytearray(db.read_bytes())
    page = _index_page(db)
    data[(page - 1) * 4096 : (page - 1) * 4096 + 8] = b"\xff" * 8  # its b-tree page header
    db.write_bytes(bytes(data))

    run = subprocess.run(
        [sys.executable, "-m", "nas.search", *args, "study.n_trials=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = one_error_line(run.stderr)
    assert run.returncode == 2 and "is damaged (database disk image is malformed)" in line
    assert db.read_bytes() == bytes(data), "the refusal wrote to the damaged database"

    command = line.split("`")[1]  # the advice: sqlite3 DB .recover | sqlite3 recovered.db
    assert ".recover" in command and "password" not in line and "server" not in line
    recovered = db.with_name("recovered.db")
    assert f"study.storage=sqlite:///{recovered}" in line
    if not _follow(command, recovered):  # Debian's sqlite3 3.40 is built without .recover
        assert "or .dump where your sqlite3 lacks .recover" in line
        assert _follow(command.replace(".recover", ".dump"), recovered)
    assert finished(f"sqlite:///{recovered}", "P") == before  # every finished trial is back


def _follow(command: str, recovered: Path) -> bool:
    """Run the advice's shell command; did it rebuild a database that holds tables?"""
    recovered.unlink(missing_ok=True)
    subprocess.run(command, shell=True, capture_output=True)
    tables = subprocess.run(
        ["sqlite3", str(recovered), "SELECT count(*) FROM sqlite_master WHERE type = 'table'"],
        capture_output=True, text=True,
    )  # fmt: skip
    return tables.returncode == 0 and int(tables.stdout.strip() or 0) > 0


def test_a_full_cache_disk_leaves_no_partial_file(tmp_path: Path, tiny: list[str]) -> None:
    with small_disk(tmp_path / "cache", "1m") as disk:
        fill(disk).unlink()
        (disk / "ballast").write_bytes(b"\0" * 990_000)  # room for the tokenizer, not the rest
        args = ["budget=smoke", *tiny, f"runs_dir={tmp_path}/runs", f"cache_dir={disk}",
                "study.name=Q", "study.n_trials=1", "quiet=true"]  # fmt: skip
        with pytest.raises(NasError, match=r"cache_dir is out of space writing .* MB free\)"):
            run_search(load_settings(args))
        assert not leftovers(disk, tmp_path / "runs")


@pytest.mark.slow
def test_the_study_database_filling_up_mid_run(tmp_path: Path, shared_cache: Path) -> None:
    """The disk fills while trials run: one line, and every trial finished before it stays."""
    with small_disk(tmp_path / "small", "3m") as disk:
        args = ["budget=smoke", f"runs_dir={disk}", f"cache_dir={shared_cache}", "quiet=true",
                "study.name=F", "search_space.n_layers=[1]", "search_space.head_dim=[16]",
                "search_space.n_experts=[1]", "study.n_trials=200"]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "nas.search", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = f"sqlite:///{disk}/F/study.db"
        done: dict[int, tuple[float, ...]] = {}
        deadline = time.time() + 300
        while len(done) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            with contextlib.suppress(Exception):  # not created yet, or locked mid-commit
                done = finished(url, "F")
        fill(disk)
        _, stderr = proc.communicate(timeout=300)
        line = one_error_line(stderr)
        assert proc.returncode == 2 and "runs_dir is out of space" in line
        assert "finished trials are safe" in line
        (disk / "filler").unlink()
        after = finished(url, "F")
        assert all(after.get(number) == values for number, values in done.items())
        assert not leftovers(disk)


@pytest.mark.slow
def test_sigterm_while_the_tokenizer_trains(
    smoke_overrides: list[str], tiny: list[str], tmp_path: Path
) -> None:
    """A resume that must train its tokenizer again (a fresh cache) is stopped by SIGTERM while
    it trains: one line, the study and its tokenizer.json as they were, no partial cache file."""
    args = [*smoke_overrides, *tiny, "study.name=T"]
    settings = load_settings([*args, "study.n_trials=1"])
    run_search(settings)
    url, out = settings.study.storage, Path(settings.runs_dir) / "T"
    before, tokenizer = finished(url, "T"), (out / "tokenizer.json").read_bytes()
    cache = tmp_path / "fresh-cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.search", *args, f"cache_dir={cache}", "study.n_trials=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:  # the log says when training starts
        if "training a" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (2, 130), stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] in ("interrupted",)
    assert finished(url, "T") == before and (out / "tokenizer.json").read_bytes() == tokenizer
    assert not leftovers(cache, out)
    for cached in cache.glob("tokenizer-*.json"):  # only if training beat the signal: whole
        Tokenizer.from_file(str(cached))


@pytest.mark.parametrize(
    "sig",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_mid_trial_prints_no_traceback(
    smoke_overrides: list[str], tiny: list[str], sig: signal.Signals
) -> None:
    """Optuna's "Trial N failed ... KeyboardInterrupt" record and its traceback are not
    printed: the run says once what happened and how to resume."""
    args = [*smoke_overrides, *tiny, "study.name=I", "study.n_trials=20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.search", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the first trial's line: the second one is running
        seen.append(line)
        if "(1/20)" in line:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    stderr = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr and "failed with" not in stderr, stderr[-2000:]
    assert one_error_line(stderr).startswith("error: interrupted; the running trial is marked")


def test_a_journal_cut_short_mid_append_is_read_and_resumed(tmp_path: Path) -> None:
    """A full disk (or a crash) can stop an append half-way; Optuna would then append after the
    broken line and fail to read the file ever after. Opening drops that line; every finished
    trial stays and the study resumes."""
    url = f"journal:///{tmp_path}/study.journal"
    study = optuna.create_study(study_name="J", storage=open_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = finished(url, "J")
    with open(tmp_path / "study.journal", "ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "cut sh')  # no newline: the disk filled up
    resumed = optuna.load_study(study_name="J", storage=open_storage(url))
    resumed.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    after = finished(url, "J")
    assert len(after) == 5 and all(after[n] == v for n, v in before.items())
