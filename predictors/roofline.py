"""Decode and prefill latency from a roofline: the slower of compute and memory traffic, plus
fixed per-token and per-layer overheads. The hardware file supplies peaks and the prior's
efficiencies and overheads; calibration on real measurements replaces them (its own issue).

The weights are priced as the profile's runtime holds them (`footprint.linear_weights`): ONNX
Runtime's int8/int4 layers padded to whole groups, ExecuTorch's unfit int4 layers and float
experts at float width, and ExecuTorch's prefill running every expert. Float weights and the KV
cache are as wide as the engine exports them (fp32 on CPUs, fp16 on GPUs), and 16-bit candidates
compute in that float.
"""

from __future__ import annotations

from typing import ClassVar

from nas.arch import ArchConfig, Candidate
from nas.hardware import HardwareProfile
from predictors.base import Estimate, Predictor
from predictors.footprint import (
    float_bytes,
    kv_cache_bytes,
    linear_weights,
    prefill_experts,
)

MOE_DISPATCH_PER_EXPERT = 0.5  # extra layer-overheads per routed expert (gather, scatter)


class RooflineLatency(Predictor):
    """Batch-1 decode ms/token at the device's context, and prefill ms for its prompt length."""

    quantities: ClassVar[tuple[str, ...]] = ("decode_ms", "prefill_ms")

    def __init__(self, hardware: HardwareProfile, float_width: float | None = None) -> None:
        """`float_width`: bytes of a float weight or KV element; the engine's export for the
        profile by default (`nas.bench priors` prices other runtimes' files, with fp16 ones)."""
        super().__init__(hardware)
        self.float_width = float_width or float_bytes(hardware)

    def _compute_dtype(self, candidate: Candidate) -> str:
        bits = candidate.compression.weight_bits
        if bits == 16:  # the export's float: fp32 on CPUs, fp16 on GPUs
            return "fp32" if self.float_width == 4 else "fp16"
        # int8 at the int8 rate; int4 at the fp16 rate (dequantized on GPUs; on this project's
        # x86 VM ONNX Runtime's int4 with int8 compute prefills at the fp32 rate per
        # multiply-add, no faster: BENCHMARKS.md)
        return "int8" if bits == 8 else "fp16"

    def _layer_overheads(self, arch: ArchConfig) -> float:
        moe_extra = arch.n_moe_layers * MOE_DISPATCH_PER_EXPERT * arch.experts_per_token
        return (arch.n_layers + moe_extra) * self.hardware.prior.per_layer_ms

    def _sparse_speedup(self, candidate: Candidate) -> float:
        """Share of linear-layer work left when the device has kernels for the sparsity pattern."""
        pattern = candidate.compression.sparsity_pattern
        if pattern != "none" and pattern in self.hardware.sparse_kernels:
            return 1.0 - candidate.compression.sparsity
        return 1.0

    def _roofline_ms(self, flops: float, nbytes: float, candidate: Candidate) -> float:
        hw = self.hardware
        dtype = self._compute_dtype(candidate)
        compute_s = flops / (hw.peak_gflops[dtype] * 1e9 * hw.prior.compute_efficiency)
        memory_s = nbytes / (hw.bandwidth_gbs * 1e9 * hw.prior.bandwidth_efficiency)
        return 1000.0 * max(compute_s, memory_s)

    def decode_ms(self, candidate: Candidate) -> float:
        arch, hw = candidate.arch, self.hardware
        context = hw.deploy.context_len
        keep = self._sparse_speedup(candidate)
        active = linear_weights(candidate, hw.runtime, arch.experts_per_token)
        head = arch.vocab_size * arch.d_model  # the LM head is read in full; one embedding row
        # Sparse storage (if declared) is already in the bytes per weight; a sparse kernel (if
        # declared) saves multiply-adds, not the bytes again.
        width = self.float_width
        weight_bytes = active.nbytes(candidate.compression, hw, width)
        weight_bytes += (head + arch.d_model) * width
        kv_read = kv_cache_bytes(arch, context, width)
        attention_flops = 4.0 * arch.n_layers * arch.n_heads * arch.head_dim * context
        flops = 2.0 * (active.compressed * keep + active.left_float + head) + attention_flops
        return (
            self._roofline_ms(flops, weight_bytes + kv_read, candidate)
            + hw.prior.per_token_ms
            + self._layer_overheads(arch)
        )

    def prefill_ms(self, candidate: Candidate) -> float:
        arch, hw = candidate.arch, self.hardware
        n = hw.deploy.prompt_len
        keep = self._sparse_speedup(candidate)
        run = linear_weights(candidate, hw.runtime, prefill_experts(arch, hw.runtime))
        stored = linear_weights(candidate, hw.runtime, arch.n_experts)
        head = arch.vocab_size * arch.d_model
        # A long prompt touches every expert: read all linear weights once.
        width = self.float_width
        weight_bytes = stored.nbytes(candidate.compression, hw, width) + head * width
        kv_write = kv_cache_bytes(arch, n, width)
        attention_flops = 2.0 * arch.n_layers * arch.n_heads * arch.head_dim * n * n  # causal
        flops = 2.0 * n * (run.compressed * keep + run.left_float + head) + attention_flops
        return (
            self._roofline_ms(flops, weight_bytes + kv_write, candidate)
            + hw.prior.per_token_ms
            + self._layer_overheads(arch)
        )

    def predict(self, candidate: Candidate) -> dict[str, Estimate]:
        spread = self.hardware.prior.rel_spread
        decode, prefill = self.decode_ms(candidate), self.prefill_ms(candidate)
        return {
            "decode_ms": Estimate(decode, decode * spread),
            "prefill_ms": Estimate(prefill, prefill * spread),
        }
