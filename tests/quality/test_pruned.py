"""nas.quality.pruned: a child pruned from a parent, distilled from it, replayed exactly."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from nas.config.compose import load_settings
from nas.fidelity.rungs import Rungs
from nas.parent import load_parent
from nas.quality.data import prepare_data
from nas.quality.pruned import load_pruning, replay, with_parent_tokenizer


@pytest.fixture(scope="module")
def pruning(tiny_parents: dict, shared_cache: Path):
    parent = load_parent(tiny_parents["llama"].directory)
    cfg = load_settings(["budget=smoke", f"cache_dir={shared_cache}"])
    data, _, info = prepare_data(with_parent_tokenizer(cfg.proxy, parent), shared_cache)
    settings = cfg.proxy.training
    loaded = load_pruning(parent, data, info, settings, shared_cache, temperature=2.0, weight=1.0)
    return loaded, data, settings


def test_the_whole_parent_is_its_own_child(pruning) -> None:
    loaded, data, settings = pruning
    whole = loaded.run(loaded.parent.arch, data, settings, seed=0)
    assert whole.evaluate() == pytest.approx(loaded.reference_bpb(data, settings), abs=1e-5)


def test_workers_get_the_parent_by_its_directory_not_its_weights(pruning) -> None:
    loaded, data, settings = pruning
    copy = pickle.loads(pickle.dumps(loaded))
    assert copy._model is None and copy.parent == loaded.parent
    assert len(pickle.dumps(loaded)) < sum(p.numel() for p in loaded.model().parameters()) * 4
    small = dataclasses.replace(loaded.parent.arch, n_layers=2)
    assert copy.run(small, data, settings, seed=0).evaluate() == pytest.approx(
        loaded.run(small, data, settings, seed=0).evaluate(), abs=1e-6
    )


def test_a_replay_is_the_ladder_run(pruning) -> None:
    loaded, data, settings = pruning
    arch = dataclasses.replace(loaded.parent.arch, n_layers=2)
    rungs = Rungs(steps=settings.steps, eta=2, count=2, seeds=1)
    start = loaded.run(arch, data, settings, seed=0).evaluate()
    # The ladder: the trunk through rung 0's trunk, a branch, then on to rung 1's.
    run = loaded.run(arch, data, settings, seed=0)
    run.advance(rungs.trunk(0))
    run.branch(rungs.decay(0)).evaluate()
    run.advance(rungs.trunk(1))
    ladder = run.branch(rungs.decay(1)).evaluate()
    assert replay(loaded, arch, data, settings, rungs, 1, seed=0).evaluate() == ladder
    assert ladder != start  # it trained the child (healing it is the bench's question)
