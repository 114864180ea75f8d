"""Bad input to `python -m nas.search`, aimed at a finished study: each prints one line that says
what to fix, exits with code 2, and leaves the study's folder byte for byte as it was."""

from __future__ import annotations

import uuid

import pytest

from predictors.calibrated import calibration_path
from tests.bad_input.conftest import Stored
from tests.bad_input.sweep import Case, case, check

PG = "postgresql://nas:{secret}@127.0.0.1:1/test"  # port 1: nothing listens


CONFIG = [
    case(
        "search",
        "device=tpu",
        expect="device must be auto, cpu, cuda, cuda:N or mps",
        id="unknown-device",
    ),
    case(
        "search",
        "device=cuda:99",
        expect="device=cuda:99 is not available here",
        id="absent-device",
    ),
    case(
        "search",
        "search_space._target_=nope.Nope",
        expect="search_space cannot be built",
        id="unknown-plugin",
    ),
    case(
        "search",
        "study.name=../x",
        expect="study.name must be a file name",
        id="name-outside-runs",
    ),
    case(
        "search",
        "study.name=",
        expect="study.name must be a file name",
        id="empty-name",
    ),
    case(
        "search",
        "study.n_trials=abc",
        expect="study.n_trials must be an integer >= 0, got 'abc'",
        id="n_trials-text",
    ),
    case(
        "search",
        "study.timeout_s=-5",
        expect="study.timeout_s must be a number >= 1",
        id="negative-timeout",
    ),
    case(
        "search",
        "hardware=nope",
        expect="unknown hardware 'nope'; choose one of:",
        id="unknown-hardware",
    ),
    case(
        "search", "budget=nope", expect="unknown budget 'nope'; choose one of:", id="unknown-budget"
    ),
    case(
        "search",
        "sampler=annealing",
        expect="unknown sampler 'annealing'; choose one of:",
        id="unknown-sampler",
    ),
    case(
        "search", "study.nope=1", expect="unknown key 'study.nope'; 'study' has:", id="unknown-key"
    ),
    case(
        "search",
        "study.n_trials=[1,2",
        expect="cannot read override 'study.n_trials=[1,2'",
        id="malformed-override",
    ),
    case("search", "nonsense", expect="cannot read override 'nonsense'", id="no-equals-sign"),
    case(
        "search",
        "study.workers=0",
        expect="study.workers must be an integer >= 1",
        id="zero-workers",
    ),
    case(
        "search",
        "study.workers=2",
        expect="needs a storage that takes several writers",
        id="workers-on-sqlite",
    ),
    case(
        "search",
        "study.threads=zero",
        expect="study.threads must be an integer >= 1",
        id="bad-threads",
    ),
    case("search", "proxy.lr=abc", expect="proxy.lr must be a number > 0, got 'abc'", id="lr-text"),
    case("search", "proxy.lr=-0.1", expect="proxy.lr must be a number > 0", id="lr-negative"),
    case("search", "proxy.lr=nan", expect="proxy.lr must be a finite number", id="lr-nan"),
    case(
        "search",
        "proxy.heldout_fraction=0.9",
        expect="proxy.heldout_fraction must be a number within",
        id="heldout-fraction",
    ),
    case(
        "search",
        "hardware.deploy.max_memory_mb=-5",
        expect="hardware.deploy.max_memory_mb must be a number > 0",
        id="negative-memory-limit",
    ),
    case("search", "seed=-1", expect="seed must be an integer >= 0", id="negative-seed"),
    case("search", "quiet=maybe", expect="quiet must be true or false", id="quiet-not-bool"),
]

SEARCH_SPACE = [
    case(
        "search",
        "search_space.n_heads=[0]",
        expect="search_space.n_heads: 0 unsupported; its choices must be integers >= 1",
        id="zero-heads",
    ),
    case(
        "search",
        "search_space.n_heads=[]",
        expect="search_space.n_heads has no choice",
        id="no-heads",
    ),
    case(
        "search",
        "search_space.n_heads=abc",
        expect="search_space.n_heads: 'abc' unsupported",
        id="heads-text",
    ),
    case(
        "search",
        "search_space.n_heads=[true]",
        expect="search_space.n_heads: True unsupported",
        id="heads-bool",
    ),
    case(
        "search",
        "search_space.n_heads=[2.5]",
        expect="search_space.n_heads: 2.5 unsupported",
        id="heads-fraction",
    ),
    case(
        "search",
        "search_space.head_dim=[3]",
        expect="search_space.head_dim: 3 unsupported; its choices must be even integers >= 2",
        id="odd-head-dim",
    ),
    case(
        "search",
        "search_space.head_dim=[64,128]",
        expect="search_space.head_dim has no choice <= max_head_dim",
        id="contradicts-budget-caps",
    ),
    case(
        "search",
        "search_space.n_kv_heads=[0]",
        expect="search_space.n_kv_heads: 0 unsupported",
        id="zero-kv-heads",
    ),
    case(
        "search",
        "search_space.n_kv_heads=[3]",
        "search_space.n_heads=[2,4]",
        expect="holds no divisor of n_heads=2",
        id="kv-heads-not-dividing",
    ),
    case(
        "search",
        "search_space.ffn_ratio=[0]",
        expect="search_space.ffn_ratio: 0 unsupported; its choices must be numbers > 0",
        id="zero-ffn-ratio",
    ),
    case(
        "search",
        "search_space.ffn_ratio=[nan]",
        expect="search_space.ffn_ratio: nan unsupported",
        id="nan-ffn-ratio",
    ),
    case(
        "search",
        "search_space.n_layers=[0]",
        expect="search_space.n_layers: 0 unsupported",
        id="zero-layers",
    ),
    case(
        "search",
        "search_space.n_experts=[0]",
        expect="search_space.n_experts: 0 unsupported",
        id="zero-experts",
    ),
    case(
        "search",
        "search_space.experts_per_token=[0]",
        expect="search_space.experts_per_token: 0 unsupported",
        id="zero-top-k",
    ),
    case(
        "search",
        "search_space.n_experts=[2]",
        "search_space.experts_per_token=[4]",
        expect="has no value <= n_experts=2",
        id="top-k-over-experts",
    ),
    case(
        "search",
        "search_space.moe_every=[0]",
        expect="search_space.moe_every: 0 unsupported",
        id="zero-moe-every",
    ),
    case(
        "search",
        "search_space.tie_embeddings=[]",
        expect="search_space.tie_embeddings has no choice",
        id="no-tie-choice",
    ),
    case(
        "search",
        "search_space.tie_embeddings=[maybe]",
        expect="search_space.tie_embeddings: 'maybe' unsupported",
        id="tie-not-bool",
    ),
    case(
        "search",
        "search_space.group_size=[0]",
        expect="search_space.group_size: 0 unsupported; its choices must be powers of two >= 16",
        id="zero-group",
    ),
    case(
        "search",
        "search_space.group_size=[24]",
        expect="search_space.group_size: 24 unsupported",
        id="group-not-power-of-two",
    ),
    case(
        "search",
        "search_space.weight_bits=[3]",
        expect="search_space.weight_bits: 3 unsupported; its choices must be 16, 8 or 4",
        id="unsupported-bits",
    ),
    case(
        "search",
        "search_space.sparsity=[bogus]",
        expect="search_space.sparsity: 'bogus' unsupported",
        id="unknown-sparsity",
    ),
    case(
        "search",
        "search_space.n_heads=[1]",
        "search_space.head_dim=[6]",
        expect="2:4, which needs layer widths divisible by 4",
        id="2to4-on-odd-width",
    ),
]

RESUME = [
    case(
        "search",
        "proxy.steps=3",
        expect="study 'B' was started with other settings",
        id="other-proxy",
    ),
    case(
        "search",
        "search_space.n_heads=[1,2]",
        expect="was started with other settings",
        id="other-space",
    ),
    case(
        "search",
        "proxy.tokenizer={bad}/other_tokenizer.json",
        expect="was started with other settings",
        id="other-tokenizer",
    ),
    case(
        "search",
        "proxy.corpus={bad}/short.txt",
        expect="was started with other settings",
        id="other-corpus",
    ),
]

DATA = [
    case(
        "search",
        "proxy.corpus={bad}/none.txt",
        expect="corpus not found: {bad}/none.txt; pass proxy.corpus=PATH",
        id="corpus-missing",
    ),
    case(
        "search",
        "proxy.corpus={bad}/empty.txt",
        expect="its 0 bytes of text leave 0 held-out bytes",
        id="corpus-empty",
    ),
    case("search", "proxy.corpus={bad}/model.bin", expect="looks binary", id="corpus-binary"),
    case(
        "search", "proxy.corpus={bad}/latin1.txt", expect="is not UTF-8 text", id="corpus-not-utf8"
    ),
    case(
        "search",
        "proxy.corpus={bad}/notext",
        expect="holds no text files",
        id="corpus-folder-without-text",
    ),
    case(
        "search",
        "proxy.corpus={bad}/tiny",
        expect="held-out bytes at proxy.heldout_fraction=0.05, and the held-out split needs 4096",
        id="corpus-folder-too-small",
    ),
    case(
        "search",
        "proxy.corpus={bad}/short.txt",
        "proxy.seq_len=100000",
        expect="corpus too short for the budget",
        id="corpus-short-for-seq-len",
    ),
    case(
        "search",
        "proxy.tokenizer={bad}/nope.json",
        expect="tokenizer file not found",
        id="tokenizer-missing",
    ),
    case(
        "search",
        "proxy.tokenizer={bad}/broken_tokenizer.json",
        expect="cannot be read",
        id="tokenizer-broken",
    ),
]

STORAGE = [
    case(
        "search",
        "study.storage=sqlite:///",
        expect="names a folder, not a database file",
        id="sqlite-url-without-file",
    ),
    case(
        "search",
        "study.storage=journal:////dev/null",
        expect="names a device, pipe or socket",
        id="journal-on-dev-null",
    ),
    case(
        "search",
        f"study.storage={PG}",
        expect="cannot open study storage postgresql://nas:***@127.0.0.1:1/test",
        id="unreachable-server",
    ),
    case(
        "search",
        "study.storage=postgresql://:{secret}@127.0.0.1:1/test",
        expect="postgresql://:***@127.0.0.1:1/test",
        id="password-without-user",
    ),
    case(
        "search",
        "study.storage=postgresql://nas:{secret}@x@127.0.0.1:1/test",
        expect="postgresql://nas:***@127.0.0.1:1/test",
        id="password-with-at-sign",
    ),
    case(
        "search",
        "study.storage=postgresql://nas:a/{secret}@127.0.0.1:1/test",
        expect="postgresql://nas:***@127.0.0.1:1/test",
        id="password-with-slash",
    ),
    case(
        "search",
        "study.storage='postgresql://nas@127.0.0.1:1/test?password={secret}'",
        expect="?password=***",
        id="password-in-query",
    ),
    case(
        "search", "study.storage=not-a-url", expect="cannot open study storage", id="malformed-url"
    ),
    case(
        "search",
        "study.storage=journal:///{bad}/plain/study.journal",
        expect="cannot write the study database folder",
        id="journal-under-a-file",
    ),
    case(
        "search",
        "runs_dir={bad}/plain/runs",
        expect="{bad}/plain/runs/B",
        id="runs-dir-under-a-file",
    ),
    case(
        "search",
        "runs_dir={bad}/damaged-header",
        expect="study.db is damaged (file is not a database): keep a copy, recover what it holds",
        id="damaged-db-header",
    ),
    case(
        "search",
        "runs_dir={bad}/damaged-page",
        # SQLite's own reason depends on whether the schema spilled onto a damaged page
        # ("malformed database schema") or not ("database disk image is malformed")
        expect="study.db is damaged (",
        id="damaged-db-page",
    ),
]


@pytest.mark.parametrize("item", CONFIG + SEARCH_SPACE + RESUME + DATA + STORAGE)
def test_search_refuses(
    item: Case, stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    check(item, stored.study_args, values, stored.runs, capsys)


def test_refused_resume_keeps_the_study_tokenizer(
    stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: another tokenizer of the same size must not replace the study's copy,
    or export would ship the wrong one."""
    before = (stored.runs / "B" / "tokenizer.json").read_bytes()
    item = Case("search", ("proxy.tokenizer={bad}/other_tokenizer.json",), "other settings")
    check(item, stored.study_args, values, stored.runs, capsys)
    assert (stored.runs / "B" / "tokenizer.json").read_bytes() == before


def test_wrong_role_hides_the_password(
    stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str], pg_url: str
) -> None:
    # The test server trusts every password, so a role that does not exist stands in for it.
    host = pg_url.split("@")[-1].removeprefix("postgresql://")
    item = Case("search", (f"study.storage=postgresql://nobody:{{secret}}@{host}",), "nobody:***@")
    assert 'role "nobody" does not exist' in check(
        item, stored.study_args, values, stored.runs, capsys
    )


def test_corrupted_calibration_file(
    stored: Stored, values: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"test-corrupt-{uuid.uuid4().hex[:8]}"  # a device of its own: no real file is touched
    path = calibration_path(name)
    path.write_text('{"decode_ms": {"features": ["flops", ')  # cut off mid-write
    try:
        item = Case("search", (f"hardware.name={name}",), "is unreadable or corrupted")
        line = check(item, stored.study_args, values, stored.runs, capsys)
    finally:
        path.unlink()
    assert "python -m nas.calibrate" in line
