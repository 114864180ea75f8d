"""Compression in the predictors: bits change bytes; sparsity counts only where a device has it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.config.compose import load_settings
from nas.hardware import HardwareProfile
from predictors import MemoryModel, RooflineLatency
from predictors.footprint import (
    active_matmul_params,
    float_bytes,
    kv_cache_bytes,
    matmul_bytes_per_weight,
    padded_params,
    stored_weight_bytes,
    unfit_params,
)

ARCH = ArchConfig(n_layers=4, n_heads=8, n_kv_heads=2, head_dim=64, ffn_dim=2048, vocab_size=512)
DENSE = CompressionConfig()
TWO_FOUR = CompressionConfig(sparsity=0.5, sparsity_pattern="2:4")
UNSTRUCTURED = CompressionConfig(sparsity=0.5, sparsity_pattern="unstructured")


def profile(name: str) -> HardwareProfile:
    return load_settings([f"hardware={name}"]).hardware


def predict(hw: HardwareProfile, comp: CompressionConfig) -> dict[str, float]:
    candidate = Candidate(ARCH, comp)
    out = {k: e.mean for k, e in RooflineLatency(hw).predict(candidate).items()}
    return {**out, "memory_mb": MemoryModel(hw).predict(candidate)["memory_mb"].mean}


@pytest.mark.parametrize("name", ["pixel8", "rpi5", "local_cpu"])
def test_sparsity_buys_nothing_without_kernels_or_storage(name: str) -> None:
    hw = profile(name)
    assert not hw.sparse_kernels and not hw.sparse_storage
    dense = predict(hw, DENSE)
    for comp in (TWO_FOUR, UNSTRUCTURED):
        assert predict(hw, comp) == dense


def test_fewer_bits_mean_fewer_bytes_and_faster_memory_bound_decode() -> None:
    hw = profile("pixel8")
    fp16 = predict(hw, DENSE)
    int8 = predict(hw, CompressionConfig(weight_bits=8, group_size=128))
    int4 = predict(hw, CompressionConfig(weight_bits=4, group_size=32))
    assert int4["memory_mb"] < int8["memory_mb"] < fp16["memory_mb"]
    assert int4["decode_ms"] < int8["decode_ms"] < fp16["decode_ms"]


def test_two_four_on_a_gpu_saves_its_stored_bytes_once() -> None:
    a100 = profile("a100")
    assert "2:4" in a100.sparse_kernels and "2:4" in a100.sparse_storage
    # Strip fixed overheads and make compute free: decode time is then bytes / bandwidth.
    prior = dataclasses.replace(a100.prior, per_token_ms=0.0, per_layer_ms=0.0)
    flops = {k: v * 1e6 for k, v in a100.peak_gflops.items()}
    hw = dataclasses.replace(a100, prior=prior, peak_gflops=flops)

    def traffic(comp: CompressionConfig) -> float:
        head = ARCH.vocab_size * ARCH.d_model
        return (
            active_matmul_params(ARCH) * matmul_bytes_per_weight(comp, hw, 2)
            + (head + ARCH.d_model) * 2
            + kv_cache_bytes(ARCH, hw.deploy.context_len, 2)
        )

    ratio = predict(hw, TWO_FOUR)["decode_ms"] / predict(hw, DENSE)["decode_ms"]
    assert ratio == pytest.approx(traffic(TWO_FOUR) / traffic(DENSE), rel=1e-9)
    # 2:4 keeps half the values plus 2-bit indices: 9/16 of fp16 bytes, not a quarter.
    assert float_bytes(hw) == 2  # the GPU export is fp16
    assert matmul_bytes_per_weight(TWO_FOUR, hw, 2) == pytest.approx(0.5 * 18 / 8)
    # Unstructured sparsity has neither kernels nor a storage format there.
    assert predict(hw, UNSTRUCTURED) == predict(hw, DENSE)


def test_the_priors_price_the_layers_as_each_runtime_holds_them() -> None:
    """The roofline and memory priors follow the exported graph, like the calibrated features: ONNX
    Runtime's int8/int4 pad a width of 192 to 256 in groups of 128, so they cost as many bytes as
    the same layers in groups of 64 plus the padding; ExecuTorch's int4 keeps those layers float."""
    narrow = ArchConfig(n_layers=2, n_heads=6, n_kv_heads=2, head_dim=32, ffn_dim=512,
                        vocab_size=512)  # fmt: skip
    pixel8 = profile("pixel8")
    # Memory-bound and without fixed costs, decode time is the bytes read.
    prior = dataclasses.replace(pixel8.prior, per_token_ms=0.0, per_layer_ms=0.0)
    hw = dataclasses.replace(pixel8, prior=prior, peak_gflops={k: 1e9 for k in pixel8.peak_gflops})
    g128, g64 = CompressionConfig(4, 128), CompressionConfig(4, 64)
    assert g128.bits_per_weight != g64.bits_per_weight  # compare bytes, not weights

    def decode_bytes(comp: CompressionConfig, runtime: str = "onnxruntime") -> float:
        ms = RooflineLatency(hw.for_runtime(runtime)).decode_ms(Candidate(narrow, comp))
        return ms / 1000.0 * hw.bandwidth_gbs * 1e9 * hw.prior.bandwidth_efficiency

    fp32 = float_bytes(hw)
    assert fp32 == 4  # the CPU export is fp32
    rest = decode_bytes(DENSE) - narrow.matmul_params * fp32  # head, one embedding row, KV

    def weights_at(comp: CompressionConfig) -> float:
        return (decode_bytes(comp) - rest) / matmul_bytes_per_weight(comp, hw, fp32)

    # Weights read in the candidate's format: the same layers, plus the padding at g128.
    padding = weights_at(g128) - weights_at(g64)
    assert padding == pytest.approx(padded_params(narrow, 128), rel=1e-6)
    assert padded_params(narrow, 128) > 0 and padded_params(narrow, 64) == 0
    # ExecuTorch reads the unfit layers (here all but the down projections) as fp32 instead.
    left_float = unfit_params(narrow, 128)
    fit = narrow.matmul_params - left_float
    assert 0 < fit < left_float
    et_bytes = decode_bytes(g128, "executorch") - rest
    expected = left_float * fp32 + fit * matmul_bytes_per_weight(g128, hw, fp32)
    assert et_bytes == pytest.approx(expected, rel=1e-6)
    # Stored bytes follow: the padded graph takes more memory than the one whose groups fit.
    memory = {
        comp.group_size: MemoryModel(hw).predict(Candidate(narrow, comp))["memory_mb"].mean
        for comp in (g128, g64)
    }
    pad_mb = padded_params(narrow, 128) * matmul_bytes_per_weight(g128, hw, fp32) / 2**20
    scales_mb = (
        narrow.matmul_params
        * (matmul_bytes_per_weight(g128, hw, fp32) - matmul_bytes_per_weight(g64, hw, fp32))
        / 2**20
    )
    assert memory[128] - memory[64] == pytest.approx(pad_mb + scales_mb, rel=1e-6)


@pytest.mark.parametrize("name", ["pixel8", "a100"])
def test_the_priors_price_float_weights_as_wide_as_the_export_holds_them(
    tmp_path: Path, name: str
) -> None:
    """A CPU profile's model.onnx holds its float weights in fp32, a GPU profile's in fp16: the
    memory prior's stored bytes for a 16-bit candidate are the graph's weights. A tied head is
    priced as an untied one: the file stores it once, but ONNX Runtime's session took as much
    memory either way (32k-64k vocabularies), and ExecuTorch's program stores it twice."""
    import numpy as np
    import onnx

    from nas.hardware import float_dtype_on
    from nas.onnx.export import export_decode

    untied = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=256,
                        vocab_size=1024, tie_embeddings=False)  # fmt: skip
    hw = profile(name)
    dtype = float_dtype_on(hw.processor)
    graph = export_decode(untied, tmp_path / "decode.onnx", context_len=8, dtype=dtype)
    weights = onnx.load(str(graph)).graph.initializer
    held = sum(
        np.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in weights
    )
    stored = stored_weight_bytes(Candidate(untied, DENSE), hw)
    assert stored == pytest.approx(held, rel=0.01)
    tied = dataclasses.replace(untied, tie_embeddings=True)
    assert stored_weight_bytes(Candidate(tied, DENSE), hw) == stored
