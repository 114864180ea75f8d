"""GPTQ: never worse than round-to-nearest on the calibration outputs, and its weights are the
exported int weights bit for bit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.compression import compress
from nas.compression.calibration import Stats, layer_stats, reconstruction_error
from nas.compression.gptq import gptq_quantize, quantize_matrix
from nas.compression.matrices import block_matrices
from nas.compression.quantize import quantize_dequantize
from nas.quality.models import build_model
from tests.compression.test_quantize import _matmul_nbits

SETTINGS = [(4, 32), (4, 128), (8, 32), (8, 128)]


def _outlier_stats(width: int, seed: int = 0) -> Stats:
    """Inputs like a trained model's: correlated channels, a few with large activations."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.eye(width) + 0.3 * torch.randn(width, width, generator=gen)
    scale = torch.ones(width)
    scale[torch.randperm(width, generator=gen)[: width // 16]] = 20.0
    x = torch.randn(1024, width, generator=gen) @ mix * scale
    stats = Stats.empty(width)
    stats.add(x)
    return stats


@pytest.mark.parametrize(("bits", "group"), SETTINGS)
@pytest.mark.parametrize("act_order", [False, True])
def test_output_error_below_round_to_nearest(bits: int, group: int, act_order: bool) -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 256)
    stats = _outlier_stats(256)
    q = gptq_quantize(weight, stats, bits=bits, group_size=group, act_order=act_order)
    rtn = quantize_dequantize(weight, bits=bits, group_size=group)
    assert reconstruction_error(weight, q, stats) < 0.8 * reconstruction_error(weight, rtn, stats)


@pytest.mark.parametrize(("bits", "group"), SETTINGS)
def test_weights_are_onnx_runtimes_int_weights(bits: int, group: int) -> None:
    torch.manual_seed(1)
    weight = torch.randn(48, 160)  # 160: a padded last group for 128
    q = gptq_quantize(weight, _outlier_stats(160, 1), bits=bits, group_size=group)
    # A fixed point of ONNX Runtime's quantizer: the export stores exactly these weights ...
    assert torch.equal(quantize_dequantize(q, bits=bits, group_size=group), q)
    # ... and its MatMulNBits kernel computes with them.
    x = torch.randn(3, 160)
    onnx_out = _matmul_nbits(q, bits, group).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, (x @ q.T).numpy(), atol=1e-4, rtol=1e-5)


def test_uncorrelated_inputs_reduce_to_round_to_nearest() -> None:
    """With H = I there is no error to feed back: GPTQ is round-to-nearest, bit for bit."""
    torch.manual_seed(2)
    weight = torch.randn(16, 64)
    stats = Stats.empty(64)
    stats.add(torch.eye(64))
    q = gptq_quantize(weight, stats, bits=4, group_size=32, act_order=False, damp=0.0)
    assert torch.equal(q, quantize_dequantize(weight, bits=4, group_size=32))


def test_masked_weights_stay_zero() -> None:
    torch.manual_seed(3)
    weight = torch.randn(16, 64)
    mask = torch.rand(16, 64) > 0.5
    q, _ = quantize_matrix(weight * mask, _outlier_stats(64), bits=4, group_size=32, mask=mask)
    assert bool((q[~mask] == 0).all())


ARCHES = {
    "dense": ArchConfig(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, vocab_size=96
    ),
    "moe": ArchConfig(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=32, vocab_size=96,
        n_experts=4, experts_per_token=2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", ARCHES)
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_every_matrix_of_a_compressed_model_is_on_the_grid(name: str, method: str) -> None:
    arch = ARCHES[name]
    model = build_model(arch, seed=1, max_positions=32)
    calibration = torch.randint(0, 96, (4, 32))
    comp = CompressionConfig(weight_bits=4, group_size=16, quant_method=method)
    done = compress(model, Candidate(arch, comp), calibration=calibration)
    for matrix in block_matrices(done.model):
        assert torch.equal(quantize_dequantize(matrix.get(), bits=4, group_size=16), matrix.get())
    step = done.recipe.quantization
    assert step.method == method and step.calibration["windows"] == 4


@pytest.mark.slow
def test_trained_models_every_matrix_below_round_to_nearest(trained) -> None:
    """The defining property on a trained model: for every matrix of every layer, on its
    calibration inputs, GPTQ's output error ||W X - Q X|| is not above round-to-nearest's."""
    model = copy.deepcopy(trained.model)
    for bits, group in [(4, 32), (4, 128), (8, 32)]:
        better = 0
        matrices = block_matrices(model)
        for index in range(trained.arch.n_layers):
            stats = layer_stats(model, trained.calibration, index)
            for matrix in (m for m in matrices if m.name.startswith(f"model.layers.{index}.")):
                if matrix.label not in stats:
                    continue  # an expert no calibration token reached
                w = matrix.get()
                q = gptq_quantize(w, stats[matrix.label], bits=bits, group_size=group)
                rtn = quantize_dequantize(w, bits=bits, group_size=group)
                e_gptq = reconstruction_error(w, q, stats[matrix.label])
                e_rtn = reconstruction_error(w, rtn, stats[matrix.label])
                assert e_gptq <= e_rtn, (matrix.label, bits, group, e_gptq, e_rtn)
                better += e_gptq < 0.9 * e_rtn
        assert better >= 0.8 * len(matrices)
