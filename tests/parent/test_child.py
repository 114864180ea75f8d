"""Children pruned from a parent: the parent's own class shaped as the child's `ArchConfig`,
holding the kept weights; keeping everything is the parent itself; activation importance picks
units that matter (a child keeping the most important units beats one keeping the least)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from nas.arch import ArchConfig, arch_from_hf
from nas.parent import child_config, child_model, importance, load_parent, parent_model
from nas.quality.models import count_params
from nas.quality.training import bits_per_byte

FAMILIES = ["llama", "qwen3", "qwen3_moe"]


def shrink(parent: ArchConfig, **counts: int) -> ArchConfig:
    """The parent's shape with fewer units; the residual stream keeps the parent's width."""
    heads = counts.get("n_heads", parent.n_heads)
    wide = heads * parent.head_dim != parent.d_model
    return replace(parent, hidden_size=parent.d_model if wide else 0, **counts)


def axes(parent: ArchConfig) -> dict[str, dict[str, int]]:
    """One child per pruned axis (4 layers, 4 heads in 2 kv groups, FFN, 4 experts), and all."""
    out = {
        "layers": {"n_layers": 2},
        "heads": {"n_heads": 2, "n_kv_heads": 2},  # one query head per kv group
        "kv_heads": {"n_heads": 2, "n_kv_heads": 1},  # one kv group with its two heads
        "one_head": {"n_heads": 1, "n_kv_heads": 1},
        "ffn": {"ffn_dim": parent.ffn_dim // 4},
    }
    if parent.n_experts > 1:
        out["experts"] = {"n_experts": 2}
        out["top_k"] = {"n_experts": 2, "experts_per_token": 1}
    out["all"] = {k: v for axis in out.values() for k, v in axis.items()} | {"n_layers": 3}
    return out


def family_extra(model: torch.nn.Module, arch: ArchConfig) -> int:
    """Parameters the family has beyond `ArchConfig.params`, which counts per-head q/k norms
    for every MoE model and no biases: Qwen3 has the norms dense too, Mixtral has none, Qwen2's
    q/k/v carry biases. (A gap of nas.arch, a few hundred parameters per billion.)"""
    norms = model.config.model_type in ("qwen3", "qwen3_moe")
    extra = arch.n_layers * 2 * arch.head_dim * (int(norms) - int(arch.n_experts > 1))
    if model.config.model_type == "qwen2":
        extra += arch.n_layers * (arch.n_heads + 2 * arch.n_kv_heads) * arch.head_dim
    return extra


@pytest.fixture(scope="module")
def loaded(untrained_parents: dict) -> dict[str, tuple]:
    out = {}
    for family in FAMILIES:
        tiny = untrained_parents[family]
        parent = load_parent(tiny.directory)
        model = parent_model(parent)
        out[family] = (parent, model, importance(model, tiny.calibration), tiny.calibration)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_keeping_everything_is_the_parent(loaded: dict, family: str) -> None:
    parent, model, imp, calibration = loaded[family]
    child = child_model(model, imp, parent.arch)
    assert type(child) is type(model) and child is not model
    with torch.no_grad():
        assert torch.equal(child(calibration).logits, model(calibration).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_pruned_axis_gives_the_child_shape(loaded: dict, family: str) -> None:
    parent, model, imp, calibration = loaded[family]
    for axis, counts in axes(parent.arch).items():
        arch = shrink(parent.arch, **counts)
        child = child_model(model, imp, arch)
        assert type(child) is type(model), axis
        assert count_params(child) == arch.params + family_extra(model, arch), axis
        assert arch_from_hf(child_config(model, arch).to_dict()) == arch, axis
        assert count_params(child) < count_params(model), axis
        with torch.no_grad():
            logits = child(calibration[:2]).logits
        assert logits.shape == (2, calibration.shape[1], arch.vocab_size), axis
        assert torch.isfinite(logits).all(), axis


def test_children_are_deterministic_and_reload(loaded: dict, tmp_path: Path) -> None:
    parent, model, imp, calibration = loaded["qwen3_moe"]
    arch = shrink(parent.arch, **axes(parent.arch)["all"])
    first, again = child_model(model, imp, arch), child_model(model, imp, arch)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    )
    first.save_pretrained(tmp_path / "child")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "child").eval()
    with torch.no_grad():
        delta = (reloaded(calibration).logits - first(calibration).logits).abs().max()
    assert float(delta) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_importance_scores_every_unit(loaded: dict, family: str) -> None:
    parent, _, imp, _ = loaded[family]
    arch = parent.arch
    assert imp.layers.shape == (arch.n_layers,) and (imp.layers > 0).all()
    assert imp.heads.shape == (arch.n_layers, arch.n_heads) and (imp.heads > 0).all()
    if arch.n_experts > 1:
        assert imp.ffn.shape == (arch.n_layers, arch.n_experts, arch.ffn_dim)
        # normalised top-k weights: every token hands out a routing weight of 1 in all
        assert torch.allclose(imp.experts.sum(1), torch.ones(arch.n_layers, dtype=torch.float64))
    else:
        assert imp.ffn.shape == (arch.n_layers, arch.ffn_dim) and imp.experts.shape[1] == 0
    assert (imp.ffn >= 0).all() and imp.ffn.sum() > 0


def test_the_importance_cache_is_reused(untrained_parents: dict, tmp_path: Path) -> None:
    tiny = untrained_parents["llama"]
    model = parent_model(load_parent(tiny.directory))
    cache = tmp_path / "importance.pt"
    first = importance(model, tiny.calibration, cache=cache)
    assert cache.is_file()
    with torch.no_grad():  # other weights, same shape: only the fingerprint in the path differs
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    fresh = importance(model, tiny.calibration)
    reused = importance(model, tiny.calibration, cache=cache)
    assert torch.equal(reused.layers, first.layers) and torch.equal(reused.ffn, first.ffn)
    assert not torch.equal(fresh.layers, first.layers)  # so reused came from the file
    other = importance(model, tiny.calibration[:4], cache=cache)  # other tokens: scored again
    assert torch.equal(other.layers, importance(model, tiny.calibration[:4]).layers)
    assert torch.equal(importance(model, tiny.calibration[:4], cache=cache).heads, other.heads)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_importance_keeps_the_units_that_matter(tiny_parents: dict, family: str) -> None:
    """On a trained parent and held-out text, each axis pruned by importance scores better
    than the same shape keeping the least important units (Minitron's defining property)."""
    tiny = tiny_parents[family]
    parent = load_parent(tiny.directory)
    model = parent_model(parent)
    imp = importance(model, tiny.calibration)
    settings = replace(tiny.settings, eval_windows=64)
    for axis, counts in axes(parent.arch).items():
        if axis in ("heads", "kv_heads", "top_k"):
            continue  # within a group, heads of a barely trained tiny parent score alike
        arch = shrink(parent.arch, **counts)
        kept = bits_per_byte(child_model(model, imp, arch), tiny.data, settings)
        least = bits_per_byte(child_model(model, imp.reversed(), arch), tiny.data, settings)
        assert kept < least, (axis, kept, least)


def _other_families() -> dict[str, object]:
    from transformers import MistralConfig, MixtralConfig, Qwen2Config

    common = dict(
        vocab_size=128, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return {
        "mistral": MistralConfig(**common),
        "qwen2": Qwen2Config(**common),  # q/k/v carry biases, sliced with their heads
        "mixtral": MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2),
    }


@pytest.mark.parametrize("family", ["mistral", "qwen2", "mixtral"])
def test_the_other_families_prune_too(family: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_other_families()[family]).eval()
    tokens = torch.randint(0, 128, (4, 16))
    imp = importance(model, tokens)
    parent = arch_from_hf(model.config.to_dict())
    with torch.no_grad():
        same = child_model(model, imp, parent)(tokens).logits
        assert torch.equal(same, model(tokens).logits)
    arch = shrink(parent, **axes(parent)["all"])
    child = child_model(model, imp, arch)
    assert type(child) is type(model)
    assert count_params(child) == arch.params + family_extra(model, arch)
    with torch.no_grad():
        assert torch.isfinite(child(tokens).logits).all()


def test_random_selection_is_a_seeded_baseline(loaded: dict) -> None:
    parent, model, imp, calibration = loaded["qwen3_moe"]
    arch = shrink(parent.arch, **axes(parent.arch)["all"])
    first, again, other = imp.random(0), imp.random(0), imp.random(1)
    assert all(
        a.shape == b.shape
        for a, b in zip(first.to_dict().values(), imp.to_dict().values(), strict=True)
    )
    assert torch.equal(first.ffn, again.ffn) and not torch.equal(first.ffn, other.ffn)
    with torch.no_grad():
        picked = child_model(model, first, arch)(calibration[:2]).logits
        assert not torch.equal(picked, child_model(model, imp, arch)(calibration[:2]).logits)
