"""Trained tiny models (dense and MoE) and their calibration windows, once per session: the
calibration-based methods are judged on trained weights, whose activations have the uneven
channels that make them matter, not on a random initialisation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from nas.arch import ArchConfig
from nas.compression.calibration import calibration_windows
from nas.config.compose import load_settings
from nas.quality.data import prepare_data
from nas.quality.training import ProxyData, train_proxy

STEPS = 150


@dataclass(frozen=True)
class Trained:
    arch: ArchConfig
    model: torch.nn.Module
    data: ProxyData
    calibration: torch.Tensor


def _arches(vocab: int) -> dict[str, ArchConfig]:
    return {
        "dense": ArchConfig(
            n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=vocab
        ),
        "moe": ArchConfig(
            n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=64, vocab_size=vocab,
            n_experts=4, experts_per_token=2,
        ),
    }  # fmt: skip


@pytest.fixture(scope="session")
def trained_models(shared_cache: Path) -> dict[str, Trained]:
    cfg = load_settings(["budget=smoke", "hardware=pixel8", f"cache_dir={shared_cache}"])
    data, _, info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
    settings = replace(cfg.proxy.training, steps=STEPS, lr=1e-2, batch_size=8)
    calibration = calibration_windows(data.train_ids, seq_len=settings.seq_len, count=16, seed=0)
    out = {}
    for name, arch in _arches(info["vocab_size"]).items():
        result = train_proxy(arch, data, settings, seed=0)
        out[name] = Trained(arch, result.model.eval(), data, calibration)
    return out


@pytest.fixture(params=["dense", "moe"])
def trained(request: pytest.FixtureRequest, trained_models: dict[str, Trained]) -> Trained:
    return trained_models[request.param]
