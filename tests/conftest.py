"""Shared fixtures: one cache of tokenizers and token streams for the whole test session."""

from __future__ import annotations

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
