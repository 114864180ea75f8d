"""Shared fixtures: one cache of tokenizers and token streams for the whole test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizers are trained once per session, not once per test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def smoke_overrides(tmp_path: Path, shared_cache: Path) -> list[str]:
    """A `budget=smoke` study in a fresh runs directory, sharing the session's cache."""
    return [
        "hardware=pixel8",
        "budget=smoke",
        f"runs_dir={tmp_path / 'runs'}",
        f"cache_dir={shared_cache}",
        "quiet=true",
    ]


# Fast trials for fault and worker tests (issue 7): one layer, 16-wide heads, dense; the rest of
# the space (heads, FFN ratio, ties, bits, sparsity) still varies, so candidates differ; none is
# pruned after training.
TINY = [
    "search_space.n_layers=[1]",
    "search_space.n_heads=[1,2]",
    "search_space.head_dim=[16]",
    "search_space.n_kv_heads=[1]",
    "search_space.n_experts=[1]",
    "search_space.structured=[false]",  # trained as sampled (tests/search/test_shrink_search.py)
]
POSTGRES_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips the test, saying why, where none is reachable."""
    import psycopg2

    try:
        psycopg2.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg2.OperationalError as err:
        reason = str(err).strip().splitlines()[0]
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URL} ({reason}); set NAS_TEST_POSTGRES")
    return POSTGRES_URL


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture
def pg_url() -> str:
    return postgres_url()


@pytest.fixture
def pg_study() -> Iterator[str]:
    """A unique study name on the test server, deleted after the test."""
    import optuna

    from nas.study.storage import open_storage

    url = postgres_url()
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    storage = open_storage(url)
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass  # the test never created it


@pytest.fixture(scope="session")
def tiny_parents(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict:
    """Trained tiny parent checkpoints (`llama`, `qwen3`, `qwen3_moe`) for `search_space=prune`:
    name -> tests.parent.parents.TinyParent (directory, corpus data, settings, calibration)."""
    from tests.parent.parents import build_parents

    return build_parents(tmp_path_factory.mktemp("parents"), shared_cache)


@pytest.fixture(scope="session")
def untrained_parents(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> dict:
    """The same checkpoints as `tiny_parents`, saved as initialised (seconds, not minutes): for
    tests of files, shapes and exact copies, where learned weights do not matter."""
    from tests.parent.parents import build_parents

    return build_parents(tmp_path_factory.mktemp("untrained"), shared_cache, steps=0)
