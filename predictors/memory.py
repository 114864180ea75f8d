"""Deployment memory: stored weights + KV cache at the device's context + activations + runtime."""

from __future__ import annotations

from typing import ClassVar

from nas.arch import Candidate
from predictors.base import Estimate, Predictor
from predictors.footprint import float_bytes, kv_cache_bytes, stored_weight_bytes

MB = 1024.0 * 1024.0
FP32_BYTES = 4


class MemoryModel(Predictor):
    """Analytic peak memory of batch-1 decoding at the device's full context."""

    quantities: ClassVar[tuple[str, ...]] = ("memory_mb",)
    rel_spread = 0.05  # weights and cache are exact; the runtime's arena is what varies

    def activation_bytes(self, candidate: Candidate) -> float:
        """Live fp32 buffers of one decode step: residual stream, q/k/v, MLP, scores, logits."""
        arch = candidate.arch
        context = self.hardware.deploy.context_len
        per_step = (
            4 * arch.d_model
            + 3 * arch.ffn_dim * max(1, arch.experts_per_token)
            + arch.n_heads * context  # attention scores
            + arch.vocab_size  # logits
        )
        return per_step * FP32_BYTES

    def predict(self, candidate: Candidate) -> dict[str, Estimate]:
        context = self.hardware.deploy.context_len
        total = (
            stored_weight_bytes(candidate, self.hardware)
            + kv_cache_bytes(candidate.arch, context, float_bytes(self.hardware))
            + self.activation_bytes(candidate)
        ) / MB + self.hardware.prior.runtime_overhead_mb
        return {"memory_mb": Estimate(total, total * self.rel_spread)}
