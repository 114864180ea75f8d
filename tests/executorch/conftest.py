"""The tiny Llama of `helpers` and its decode programs in the three formats, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.executorch.helpers import CONTEXT, FORMATS, SEED, TINY


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    from nas.quality.models import build_model

    return build_model(TINY, seed=SEED).eval()


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lazily exported decode programs of TINY, by format name (each takes ~10 s on 2 cores)."""
    return _Programs(tmp_path_factory.mktemp("pte"))


class _Programs(dict):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str) -> Path:
        from nas.executorch.export import export_pte

        bits, group = FORMATS[name]
        path = export_pte(
            TINY, self.folder / f"decode-{name}.pte", weight_bits=bits, group_size=group,
            context_len=CONTEXT, seed=SEED,
        )  # fmt: skip
        self[name] = path
        return path
