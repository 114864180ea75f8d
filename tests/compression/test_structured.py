"""Structured pruning yields a smaller architecture whose model computes what the big one did."""

from __future__ import annotations

import pytest
import torch

from nas.arch import ArchConfig
from nas.compression.structured import expert_usage, prune_structured
from nas.errors import NasError
from nas.quality.models import build_model, count_params

HD = 6
GQA = ArchConfig(n_layers=2, n_heads=8, n_kv_heads=2, head_dim=HD, ffn_dim=64, vocab_size=100)
MOE = ArchConfig(
    n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, ffn_dim=32, vocab_size=100,
    n_experts=4, experts_per_token=2, moe_every=2,
)  # fmt: skip


@torch.no_grad()
def _silence(model: torch.nn.Module, heads: tuple[int, ...], channels: slice) -> None:
    """Zero every weight of some query heads and FFN channels: removing them changes nothing."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        for h in heads:
            attn.q_proj.weight[h * HD : (h + 1) * HD] = 0
            attn.o_proj.weight[:, h * HD : (h + 1) * HD] = 0
        mlp.gate_proj.weight[channels] = 0
        mlp.up_proj.weight[channels] = 0
        mlp.down_proj.weight[:, channels] = 0


def test_pruning_unused_heads_and_channels_keeps_the_logits() -> None:
    model = build_model(GQA, max_positions=32).eval()
    _silence(model, heads=(1, 6), channels=slice(0, 16))  # one head in each kv group of 4
    x = torch.randint(0, 100, (2, 16))
    before = model(input_ids=x).logits
    result = prune_structured(model, GQA, heads=0.25, ffn=0.25)
    assert (result.arch.n_heads, result.arch.n_kv_heads, result.arch.ffn_dim) == (6, 2, 48)
    assert result.arch.d_model == GQA.d_model  # the residual stream keeps its width
    assert result.removed == {"heads": 2, "ffn_channels": 16, "experts": 0, "layers": 0}
    assert count_params(result.model) == result.arch.params < GQA.params
    torch.testing.assert_close(result.model(input_ids=x).logits, before)


def test_moe_heads_channels_and_experts_leave_together() -> None:
    model = build_model(MOE, max_positions=32)
    calib = torch.randint(0, 100, (4, 16))
    result = prune_structured(model, MOE, heads=0.5, ffn=0.25, experts=0.25, calibration=calib)
    arch = result.arch
    # Multi-head attention: whole query/key/value heads go; experts are still routed top-2.
    assert (arch.n_heads, arch.n_kv_heads, arch.ffn_dim, arch.n_experts) == (2, 2, 24, 3)
    assert count_params(result.model) == arch.params
    assert result.model(input_ids=calib).logits.shape == (4, 16, 100)


def test_the_least_used_expert_is_removed() -> None:
    model = build_model(MOE, max_positions=32).eval()
    calib = torch.randint(0, 100, (4, 16))
    usage = expert_usage(model, calib)[1]  # layer 1 is the MoE layer (moe_every=2)
    least = int(usage.argmin())
    kept = [e for e in range(MOE.n_experts) if e != least]
    before = model.model.layers[1].mlp
    result = prune_structured(model, MOE, experts=0.25, calibration=calib)
    after = result.model.model.layers[1].mlp
    torch.testing.assert_close(after.experts.down_proj, before.experts.down_proj[kept])
    torch.testing.assert_close(after.gate.weight, before.gate.weight[kept])


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        (GQA, {"heads": 0.05}),  # removes no head
        (MOE, {"heads": 0.25}),  # 3 heads do not divide d_model 64
        (MOE, {"experts": 0.5}),  # would leave 2 experts: no calibration given
        (GQA, {"experts": 0.25, "calibration": torch.zeros(1, 4, dtype=torch.long)}),  # dense
    ],
)
def test_impossible_requests_fail_with_one_line(arch: ArchConfig, kwargs: dict) -> None:
    with pytest.raises(NasError) as info:
        prune_structured(build_model(arch, max_positions=32), arch, **kwargs)
    assert "\n" not in str(info.value)


def test_the_layer_that_changes_nothing_is_dropped_first() -> None:
    """Block influence: a layer whose attention and MLP add nothing to the residual stream has
    influence 0, is removed first, and removing it keeps the logits."""
    arch = ArchConfig(n_layers=4, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=32, vocab_size=100)
    model = build_model(arch, max_positions=32).eval()
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    calib = torch.randint(0, 100, (4, 16))
    before = model(input_ids=calib).logits
    result = prune_structured(model, arch, layers=0.25, calibration=calib)
    assert result.arch.n_layers == 3 and result.removed["layers"] == 1
    assert count_params(result.model) == result.arch.params
    torch.testing.assert_close(result.model(input_ids=calib).logits, before)


def test_layer_pruning_refuses_what_it_cannot_do() -> None:
    with pytest.raises(NasError, match="calibration"):
        prune_structured(build_model(GQA, max_positions=32), GQA, layers=0.5)
    with pytest.raises(NasError, match="MoE every 2"):
        prune_structured(
            build_model(MOE, max_positions=32),
            MOE,
            layers=0.5,
            calibration=torch.zeros(1, 4).long(),
        )
