"""nas.quality.training: a run carried on through rungs equals a fresh run of each length."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from nas.arch import ArchConfig
from nas.config.compose import load_settings
from nas.fidelity.rungs import Rungs
from nas.quality.data import prepare_data
from nas.quality.training import ProxyRun, train_proxy


@pytest.fixture(scope="module")
def smoke(shared_cache: Path):
    cfg = load_settings(["budget=smoke", f"cache_dir={shared_cache}"])
    data, _, info = prepare_data(cfg.proxy, shared_cache)
    return data, cfg.proxy.training, info["vocab_size"]


def test_carrying_on_through_the_rungs_equals_fresh_runs(smoke) -> None:
    data, settings, vocab = smoke
    arch = ArchConfig(1, 2, 1, 16, 32, vocab)
    rungs = Rungs(steps=6, eta=2, count=3)
    run = ProxyRun(arch, data, settings, seed=3)
    carried = []
    for k in range(3):
        run.advance(rungs.trunk(k))
        carried.append(run.branch(rungs.decay(k)).evaluate())
    fresh = [
        train_proxy(arch, data, dataclasses.replace(settings, steps=rungs.total(k)), seed=3).bpb
        for k in range(3)
    ]
    assert carried == fresh  # exactly: the batches are a function of (seed, step)
    assert carried[2] < carried[0]


def test_a_branch_leaves_its_trunk_untouched(smoke) -> None:
    data, settings, vocab = smoke
    run = ProxyRun(ArchConfig(1, 2, 1, 16, 32, vocab), data, settings, seed=0)
    run.advance(4)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    branch = run.branch(2)
    assert branch.step == 6 and run.step == 4
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())


@pytest.mark.parametrize("name", ["depth", "width_lr"])
def test_each_parameterisation_trains(smoke, name: str) -> None:
    data, settings, vocab = smoke
    arch = ArchConfig(2, 2, 1, 16, 32, vocab)
    plain = train_proxy(arch, data, settings, seed=1)
    other = train_proxy(arch, data, dataclasses.replace(settings, parameterisation=name), seed=1)
    assert other.bpb != plain.bpb and other.bpb < 9.0
