"""Decode and prefill latency from a roofline: the slower of compute and memory traffic, plus
fixed per-token and per-layer overheads. The hardware file supplies peaks and the prior's
efficiencies and overheads; calibration on real measurements replaces them (its own issue).

The weights are priced as the profile's runtime holds them (`footprint.linear_weights`): ONNX
Runtime's int8/int4 layers padded to whole groups, ExecuTorch's unfit int4 layers and float
experts at float width, and ExecuTorch's prefill running every expert.
"""

from __future__ import annotations

from typing import ClassVar

from nas.arch import ArchConfig, Candidate
from predictors.base import Estimate, Predictor
from predictors.footprint import (
    FP16_BYTES,
    kv_cache_bytes,
    linear_weights,
    prefill_experts,
)

COMPUTE_DTYPE = {16: "fp16", 8: "int8", 4: "fp16"}  # 4-bit weights are dequantised to fp16
MOE_DISPATCH_PER_EXPERT = 0.5  # extra layer-overheads per routed expert (gather, scatter)


class RooflineLatency(Predictor):
    """Batch-1 decode ms/token at the device's context, and prefill ms for its prompt length."""

    quantities: ClassVar[tuple[str, ...]] = ("decode_ms", "prefill_ms")

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
        dtype = COMPUTE_DTYPE[candidate.compression.weight_bits]
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
        weight_bytes = active.nbytes(candidate.compression, hw) + (head + arch.d_model) * FP16_BYTES
        kv_read = kv_cache_bytes(arch, context)
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
        weight_bytes = stored.nbytes(candidate.compression, hw) + head * FP16_BYTES
        kv_write = kv_cache_bytes(arch, n)
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
