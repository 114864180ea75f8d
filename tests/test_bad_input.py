"""Bad input, tried for real through the command line: each mistake prints one line that says
what to fix, exits with code 2, and leaves the study already stored exactly as it was."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from nas.errors import run_cli
from nas.search.__main__ import main
from nas.study.storage import open_storage
from predictors.calibrated import calibration_path

SECRET = "s3cr3t-pw"


@dataclass(frozen=True)
class Stored:
    """A finished two-trial study that every bad input is aimed at."""

    base: list[str]
    storage: str
    runs: Path
    trials: list[tuple[int, str, tuple[float, ...] | None]]
    pareto: bytes


def snapshot(storage: str) -> list[tuple[int, str, tuple[float, ...] | None]]:
    study = optuna.load_study(study_name="B", storage=open_storage(storage))
    return [(t.number, t.state.name, tuple(t.values or ())) for t in study.trials]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Stored:
    runs = tmp_path_factory.mktemp("bad") / "runs"
    base = ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
            "study.name=B", "search_space.n_layers=[1]", "search_space.n_experts=[1]"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(main, [*base, "study.n_trials=2"])
    assert done.value.code == 0
    storage = f"sqlite:///{runs}/B/study.db"
    return Stored(base, storage, runs, snapshot(storage), (runs / "B" / "pareto.json").read_bytes())


def refuse(stored: Stored, capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """Run the command with `overrides`; assert exit 2, one line, and an untouched study."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run_cli(main, [*stored.base, *overrides])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert SECRET not in err
    assert snapshot(stored.storage) == stored.trials, "a stored trial changed"
    assert (stored.runs / "B" / "pareto.json").read_bytes() == stored.pareto
    return lines[0]


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["study.n_trials=abc"], "study.n_trials must be an integer >= 0, got 'abc'"),
        (["study.timeout_s=-5"], "study.timeout_s must be a number >= 1"),
        (["hardware=nope"], "unknown hardware 'nope'; choose one of:"),
        (["sampler=annealing"], "unknown sampler 'annealing'; choose one of:"),
        (["study.nope=1"], "unknown key 'study.nope'; 'study' has:"),
        (["study.n_trials=[1,2"], "cannot read override"),
        (["study.workers=0"], "study.workers must be an integer >= 1"),
        (["study.workers=2"], "needs a storage that takes several writers"),
        (["study.threads=zero"], "study.threads must be an integer >= 1"),
        (["proxy.steps=3"], "was started with other settings (proxy differ)"),
    ],
    ids=["n_trials-abc", "negative-timeout", "unknown-hardware", "unknown-sampler",
         "unknown-key", "malformed-override", "zero-workers", "workers-on-sqlite",
         "bad-threads", "changed-settings-on-resume"],
)  # fmt: skip
def test_bad_config(
    stored: Stored, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: str
) -> None:
    assert expected in refuse(stored, capsys, *overrides)


# -- search-space bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["search_space.n_heads=[]"], "search_space.n_heads has no choice"),
        (["search_space.head_dim=[64,128]"], "search_space.head_dim has no choice <= max_head_dim"),
        (["search_space.sparsity=[bogus]"], "search_space.sparsity: ['bogus'] unknown"),
        (["search_space.weight_bits=[3]"], "search_space.weight_bits: 3 unsupported"),
    ],
    ids=["empty", "contradicts-budget-caps", "unknown-sparsity", "unsupported-bits"],
)
def test_bad_search_space(
    stored: Stored, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: str
) -> None:
    assert expected in refuse(stored, capsys, *overrides)


# -- corpus and tokenizer -----------------------------------------------------------------------


def test_corpus_missing(stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = refuse(stored, capsys, f"proxy.corpus={tmp_path}/none.txt")
    assert "corpus not found" in line and "proxy.corpus=PATH" in line


def test_corpus_empty(stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    assert "too short (0 bytes)" in refuse(stored, capsys, f"proxy.corpus={tmp_path}/empty.txt")


def test_corpus_binary(stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 400)
    assert "looks binary" in refuse(stored, capsys, f"proxy.corpus={tmp_path}/model.bin")


def test_corpus_not_utf8(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "latin1.txt").write_bytes("café crème brûlée ".encode("latin-1") * 3000)
    assert "is not UTF-8 text" in refuse(stored, capsys, f"proxy.corpus={tmp_path}/latin1.txt")


def test_corpus_too_short_for_the_budget(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    corpus = tmp_path / "short.txt"  # enough for a held-out split, too little for seq_len
    corpus.write_text("".join(f"line {i} of a short text.\n" for i in range(5000)))
    line = refuse(stored, capsys, f"proxy.corpus={corpus}", "proxy.seq_len=100000")
    assert "corpus too short for the budget" in line


def test_broken_tokenizer_file(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')  # truncated
    line = refuse(stored, capsys, f"proxy.tokenizer={tmp_path}/tokenizer.json")
    assert "cannot be read" in line


def test_tokenizer_missing(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "tokenizer file not found" in refuse(
        stored, capsys, f"proxy.tokenizer={tmp_path}/nope.json"
    )


# -- storage ------------------------------------------------------------------------------------


def test_storage_unreachable_hides_the_password(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://nas:{SECRET}@127.0.0.1:1/test"  # port 1: nothing listens
    line = refuse(stored, capsys, f"study.storage={url}")
    assert "cannot open study storage postgresql://nas:***@127.0.0.1:1/test" in line
    assert "Connection refused" in line


def test_storage_wrong_role_and_password(
    stored: Stored, capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    # The test server trusts every password, so a role that does not exist stands in for it.
    host = pg_url.split("@")[-1].removeprefix("postgresql://")
    line = refuse(stored, capsys, f"study.storage=postgresql://nobody:{SECRET}@{host}")
    assert 'role "nobody" does not exist' in line and "nobody:***@" in line


def test_storage_malformed_url(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot open study storage" in refuse(stored, capsys, "study.storage=not-a-url")


def test_journal_storage_under_a_file(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("a file where a folder should be")
    line = refuse(stored, capsys, f"study.storage=journal:///{tmp_path}/plain/study.journal")
    assert "cannot write the study database folder" in line


# -- runs directory -----------------------------------------------------------------------------


def test_runs_dir_unwritable(
    stored: Stored, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "plain").write_text("as root, chmod would not stop a write; a file does")
    line = refuse(stored, capsys, f"runs_dir={tmp_path}/plain/runs")
    assert "cannot write to" in line and "runs_dir=PATH" in line


# -- through a real process, as a user types it -------------------------------------------------


def test_cli_process_prints_one_line_without_the_password(stored: Stored) -> None:
    url = f"postgresql://nas:{SECRET}@127.0.0.1:1/test"
    run = subprocess.run(
        [sys.executable, "-m", "nas.search", *stored.base, f"study.storage={url}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open study storage")
    assert SECRET not in run.stderr + run.stdout
    assert snapshot(stored.storage) == stored.trials


def test_printed_config_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        run_cli(main, ["budget=smoke", f"study.storage=postgresql://u:{SECRET}@db/nas", "--cfg"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "postgresql://u:***@db/nas" in out and SECRET not in out


def test_corrupted_calibration_file(stored: Stored, capsys: pytest.CaptureFixture[str]) -> None:
    name = f"test-corrupt-{uuid.uuid4().hex[:8]}"  # a device of its own: no real file is touched
    path = calibration_path(name)
    path.write_text('{"decode_ms": {"features": ["flops", ')  # cut off mid-write
    try:
        line = refuse(stored, capsys, f"hardware.name={name}")
    finally:
        path.unlink()
    assert "is unreadable or corrupted" in line and "python -m nas.calibrate" in line
