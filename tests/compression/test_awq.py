"""AWQ: the folded scales leave the float model's function unchanged, every scale group's output
error is not above round-to-nearest's, and a trained model's decoder layers reconstruct better."""

from __future__ import annotations

import copy

import pytest
import torch

from nas.arch import ArchConfig
from nas.compression.awq import fold, group_error, layer_groups, search_scale
from nas.compression.calibrated import quantize_calibrated
from nas.compression.calibration import layer_stats
from nas.compression.matrices import block_matrices, decoder_layers
from nas.compression.quantize import quantize_matrices
from nas.quality.models import build_model

ARCHES = {
    "dense": ArchConfig(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, vocab_size=96
    ),
    "moe": ArchConfig(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=32, vocab_size=96,
        n_experts=4, experts_per_token=2,
    ),
}  # fmt: skip


def _groups(model, calibration, index=0):
    matrices = [m for m in block_matrices(model) if m.name.startswith(f"model.layers.{index}.")]
    stats = layer_stats(model, calibration, index)
    return layer_groups(decoder_layers(model)[index], index, matrices, stats)


@pytest.mark.parametrize("name", ARCHES)
def test_folding_any_scales_keeps_the_logits(name: str) -> None:
    model = build_model(ARCHES[name], seed=0, max_positions=32)
    calibration = torch.randint(0, 96, (4, 32))
    with torch.no_grad():
        before = model(input_ids=calibration).logits
    for index in range(2):
        for group in _groups(model, calibration, index):
            width = group.matrices[0].get().shape[1]
            fold(group, torch.rand(width) * 4 + 0.25 if group.heads is None else _shared(group))
    with torch.no_grad():
        after = model(input_ids=calibration).logits
    torch.testing.assert_close(after, before, atol=2e-4, rtol=1e-4)


def _shared(group) -> torch.Tensor:
    kv, per_kv, head_dim = group.heads
    return (torch.rand(kv, 1, head_dim) * 4 + 0.25).expand(kv, per_kv, head_dim).reshape(-1)


@pytest.mark.parametrize("name", ARCHES)
@pytest.mark.parametrize(("bits", "group_size"), [(4, 16), (8, 32)])
def test_each_group_is_at_most_round_to_nearest(name: str, bits: int, group_size: int) -> None:
    model = build_model(ARCHES[name], seed=2, max_positions=32)
    for group in _groups(model, torch.randint(0, 96, (4, 32))):
        s = search_scale(group, bits=bits, group_size=group_size)
        rtn = group_error(group, torch.ones_like(s), bits=bits, group_size=group_size)
        assert group_error(group, s, bits=bits, group_size=group_size) <= rtn


def _layer_errors(reference, model, calibration) -> list[float]:
    """Each decoder layer's output error on the reference model's own inputs to that layer."""
    inputs: dict[int, tuple] = {}
    errors = []

    def keep(index):
        def hook(_module, args, kwargs):
            inputs[index] = (args, kwargs)

        return hook

    layers = decoder_layers(reference)
    hooks = [
        layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    with torch.no_grad():
        reference(input_ids=calibration, use_cache=False)  # a cache would mix both models
        for hook in hooks:
            hook.remove()
        for index, (args, kwargs) in inputs.items():
            want = layers[index](*args, **kwargs)
            got = decoder_layers(model)[index](*args, **kwargs)
            errors.append(float((want - got).pow(2).sum()))
    return errors


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "group_size"), [(4, 32), (4, 128)])
def test_trained_models_layers_reconstruct_better_than_round_to_nearest(
    trained, bits: int, group_size: int
) -> None:
    """The defining property on a trained model: every decoder layer's output error on its
    calibration inputs is not above round-to-nearest's."""
    rtn = copy.deepcopy(trained.model)
    quantize_matrices(block_matrices(rtn), bits=bits, group_size=group_size)
    awq = copy.deepcopy(trained.model)
    found = quantize_calibrated(
        awq, trained.calibration, method="awq", bits=bits, group_size=group_size
    )
    assert any(alpha > 0 for alpha in found["alpha"].values())
    e_awq = _layer_errors(trained.model, awq, trained.calibration)
    e_rtn = _layer_errors(trained.model, rtn, trained.calibration)
    assert all(a <= r for a, r in zip(e_awq, e_rtn, strict=True)), (e_awq, e_rtn)
