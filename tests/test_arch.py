"""Analytic parameter counts equal the built transformers model's, to the parameter."""

from __future__ import annotations

import pytest

from nas.arch import ArchConfig, CompressionConfig, bits_label
from nas.quality.models import build_model, count_params

ARCHS = {
    "dense-mha-tied": dict(n_layers=2, n_heads=4, n_kv_heads=4, head_dim=8, ffn_dim=48),
    "dense-gqa-untied": dict(
        n_layers=3, n_heads=6, n_kv_heads=2, head_dim=8, ffn_dim=40, tie_embeddings=False
    ),
    "dense-mqa": dict(n_layers=1, n_heads=4, n_kv_heads=1, head_dim=16, ffn_dim=64),
    "moe-every-layer": dict(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=32, n_experts=4,
        experts_per_token=2,
    ),
    "moe-every-2nd-untied": dict(
        n_layers=4, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=24, n_experts=8,
        experts_per_token=1, moe_every=2, tie_embeddings=False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", ARCHS)
def test_param_count_matches_built_model(name: str) -> None:
    arch = ArchConfig(vocab_size=300, **ARCHS[name])
    model = build_model(arch)
    assert count_params(model) == arch.params
    expected_class = "Qwen3MoeForCausalLM" if arch.n_experts > 1 else "LlamaForCausalLM"
    assert type(model).__name__ == expected_class


def test_a_dict_that_names_the_width_rebuilds_a_head_pruned_shape() -> None:
    """pareto.json lists `d_model` and no `hidden_size`: a shape whose heads were pruned (width
    64, two heads of 16) must come back 64 wide, not 32."""
    from nas.objectives.pareto import ARCH_KEYS

    pruned = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=144,
                        vocab_size=300, hidden_size=64)  # fmt: skip
    listed = {k: pruned.to_dict()[k] for k in ARCH_KEYS}
    assert "hidden_size" not in listed and listed["d_model"] == 64
    assert ArchConfig.from_dict(listed) == pruned
    assert count_params(build_model(ArchConfig.from_dict(listed))) == pruned.params
    plain = ArchConfig(
        n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=144, vocab_size=300
    )
    assert ArchConfig.from_dict({k: plain.to_dict()[k] for k in ARCH_KEYS}) == plain


def test_active_params_count_only_routed_experts() -> None:
    arch = ArchConfig(vocab_size=300, **ARCHS["moe-every-layer"])
    idle = arch.n_layers * (arch.n_experts - arch.experts_per_token) * arch.mlp_params
    assert arch.active_params == arch.params - idle
    dense = ArchConfig(vocab_size=300, **ARCHS["dense-gqa-untied"])
    assert dense.active_params == dense.params


def test_moe_every_kth_layer_matches_qwen3_layout() -> None:
    arch = ArchConfig(vocab_size=300, **ARCHS["moe-every-2nd-untied"])
    model = build_model(arch)
    moe_layers = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "experts")]
    assert moe_layers == [1, 3]
    assert arch.n_moe_layers == len(moe_layers)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(n_heads=6, n_kv_heads=4), "must divide"),
        (dict(n_experts=2, experts_per_token=3), "experts_per_token"),
        (dict(n_layers=0), "n_layers"),
    ],
)
def test_invalid_arch_is_rejected(bad: dict, message: str) -> None:
    base = dict(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=16, vocab_size=300)
    with pytest.raises(ValueError, match=message):
        ArchConfig(**{**base, **bad})


def test_compression_bits_per_weight_counts_group_scales() -> None:
    assert CompressionConfig().bits_per_weight == 16
    assert CompressionConfig(weight_bits=4, group_size=32).bits_per_weight == 4.5
    with pytest.raises(ValueError):
        CompressionConfig(weight_bits=4, group_size=0)
    per_channel = CompressionConfig(weight_bits=8, group_size=0)  # ExecuTorch's int8
    assert per_channel.bits_per_weight == 8
    assert bits_label(per_channel.to_dict()) == "int8ch"
    assert bits_label(CompressionConfig(weight_bits=8, group_size=32).to_dict()) == "int8g32"
    with pytest.raises(ValueError):
        CompressionConfig(sparsity=0.3, sparsity_pattern="2:4")
