"""ProxyRun's distillation: a run that starts from a given model and learns a teacher's logits."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from nas.arch import ArchConfig
from nas.config.compose import load_settings
from nas.quality.data import prepare_data
from nas.quality.training import ProxyRun, Teacher, batch_at, bits_per_byte, distillation_loss


@pytest.fixture(scope="module")
def smoke(shared_cache: Path):
    cfg = load_settings(["budget=smoke", f"cache_dir={shared_cache}"])
    data, _, info = prepare_data(cfg.proxy, shared_cache)
    return data, cfg.proxy.training, info["vocab_size"]


@pytest.fixture(scope="module")
def teacher(smoke) -> torch.nn.Module:
    """A 'parent' trained for 40 steps: it knows more than an untrained model."""
    data, settings, vocab = smoke
    run = ProxyRun(ArchConfig(2, 4, 2, 16, 96, vocab), data, settings, seed=11)
    run.advance(40)
    return run.model.eval()


def _kl_to(model: torch.nn.Module, teacher: torch.nn.Module, data, settings) -> float:
    batch = batch_at(data.heldout_ids, settings, seed=99, step=0)[:, :-1]
    with torch.no_grad():
        return distillation_loss(
            model(input_ids=batch).logits, teacher(input_ids=batch).logits, 2.0
        ).item()


def test_a_run_starts_from_the_model_it_is_given(smoke, teacher) -> None:
    data, settings, vocab = smoke
    start = copy.deepcopy(teacher)
    run = ProxyRun(ArchConfig(2, 4, 2, 16, 96, vocab), data, settings, seed=0, start=start)
    assert run.model is start
    assert run.evaluate() == pytest.approx(bits_per_byte(teacher, data, settings), abs=1e-6)


def test_distillation_pulls_the_student_towards_its_teacher(smoke, teacher) -> None:
    data, settings, vocab = smoke
    arch = ArchConfig(1, 2, 1, 16, 32, vocab)
    plain = ProxyRun(arch, data, settings, seed=5)
    taught = ProxyRun(arch, data, settings, seed=5, teacher=Teacher(teacher, 2.0, 4.0))
    before = _kl_to(plain.model, teacher, data, settings)
    plain.advance(12)
    taught.advance(12)
    # Same start, same batches: only the distillation term differs.
    assert _kl_to(taught.model, teacher, data, settings) < _kl_to(
        plain.model, teacher, data, settings
    )
    assert _kl_to(taught.model, teacher, data, settings) < before
    # The curve records the cross-entropy, comparable with a plain run's.
    assert taught.curve[0] == plain.curve[0]


def test_a_distilled_branch_is_deterministic(smoke, teacher) -> None:
    data, settings, vocab = smoke
    arch = ArchConfig(1, 2, 1, 16, 32, vocab)

    def rung(seed: int) -> float:
        run = ProxyRun(arch, data, settings, seed=seed, teacher=Teacher(teacher))
        run.advance(6)
        return run.branch(2).evaluate()

    assert rung(1) == rung(1)
    assert rung(1) != rung(2)  # paired seeds: other batches
