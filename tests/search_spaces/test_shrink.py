"""The `slm` space's "train this shape, then prune to that one": every sampled shrink is valid,
the pruned model has exactly the shape the space priced, and the chosen recovery runs."""

from __future__ import annotations

import optuna
import pytest
import torch

from nas.arch import ArchConfig, Candidate
from nas.compression import CompressionSettings, compress, plan
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.quality.models import build_model, count_params
from nas.quality.training import ProxySettings
from nas.search.run import build_space
from nas.shrink import Shrink, pruned_arch
from tests.search_spaces.test_contract import sample

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled(overrides: list[str], n: int, seed: int = 0) -> list[Candidate]:
    space = build_space(load_settings(overrides), 384)
    out = []
    for params, candidate in sample(space, n, seed):
        assert space.candidate_from_params(params) == candidate  # replays
        out.append(candidate)
    return out


@pytest.mark.parametrize("budget", ["smoke", "cpu"])
def test_the_default_space_samples_valid_shrinks_of_every_kind(budget: str) -> None:
    shrinks = [c for c in sampled([f"budget={budget}"], 600) if c.shrink is not None]
    assert len(shrinks) > 150
    for unit in ("heads", "ffn", "experts", "layers"):
        assert any(getattr(c.shrink, unit) > 0 for c in shrinks), unit
    assert {c.shrink.recovery for c in shrinks} == {"none", "finetune", "distill"}
    for c in shrinks:
        s = c.shrink
        assert c.arch == pruned_arch(s.trained, heads=s.heads, ffn=s.ffn, experts=s.experts,
                                     layers=s.layers)  # fmt: skip
        assert c.arch.params < s.trained.params
        assert c.arch.ffn_dim % 8 == 0  # 2:4 sparsity and kernels keep working
        assert c.arch.d_model % c.arch.n_heads == 0  # transformers' rule


def test_structured_false_keeps_every_candidate_as_trained() -> None:
    assert all(
        c.shrink is None for c in sampled(["budget=smoke", "search_space.structured=[false]"], 100)
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_pruning_a_trained_model_leaves_the_shape_the_space_priced(seed: int) -> None:
    """The real surgery (`nas.compression.compress`) on each sampled shrink of the smoke space,
    calibration-ranked layers and experts included, gives the priced shape and its count."""
    shrinks = [c for c in sampled(["budget=smoke"], 80, seed) if c.shrink is not None][:12]
    calibration = torch.randint(0, 384, (2, 16))
    for candidate in shrinks:
        model = build_model(candidate.trained_arch, seed=0)
        done = compress(model, candidate, calibration=calibration)
        assert done.arch == candidate.arch
        assert count_params(done.model) == candidate.arch.params
        assert done.recipe.structured is not None
        assert done.recipe.structured.arch_before == candidate.trained_arch.to_dict()


def test_the_chosen_recovery_is_budgeted_and_recorded() -> None:
    trained = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                         vocab_size=384)  # fmt: skip
    proxy = ProxySettings(steps=40, seq_len=16, batch_size=2, eval_windows=2)
    settings = CompressionSettings(shrink_recovery_share=0.25)
    for recovery, distill in (("finetune", False), ("distill", True)):
        shrink = Shrink(trained, ffn=0.5, recovery=recovery)
        candidate = Candidate(pruned_arch(trained, ffn=0.5), shrink=shrink)
        step = plan(candidate, settings=settings, proxy=proxy).recovery
        assert step is not None and step.steps == 10 and step.distill is distill
    none = Candidate(pruned_arch(trained, ffn=0.5), shrink=Shrink(trained, ffn=0.5))
    assert plan(none, settings=settings, proxy=proxy).recovery is None


def test_a_shrink_changes_the_candidate_key_and_none_keeps_old_keys() -> None:
    trained = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                         vocab_size=384)  # fmt: skip
    small = pruned_arch(trained, layers=0.5)
    direct = Candidate(small)
    pruned = Candidate(small, shrink=Shrink(trained, layers=0.5))
    assert direct.key() != pruned.key()
    assert "shrink" not in direct.to_dict() and Candidate(small).key() == direct.key()
    assert Shrink.from_dict(pruned.shrink.to_dict()) == pruned.shrink


def test_shares_that_cannot_apply_are_refused_when_the_space_is_built() -> None:
    with pytest.raises(NasError, match=r"prune_ffn=0\.9 leaves no channel"):
        build_space(load_settings(["budget=smoke", "search_space.prune_ffn=[0.9]"]), 384)
    with pytest.raises(NasError, match=r"search_space.prune_heads.*\[0, 1\)"):
        build_space(load_settings(["budget=smoke", "search_space.prune_heads=[1.0]"]), 384)
