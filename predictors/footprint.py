"""Bytes that a candidate's weights and KV cache occupy on a device: shared by the predictors.

Convention (also written into every export's recipe): the blocks' linear layers are stored at
`weight_bits` with one fp16 scale per group; embeddings, the LM head and norms stay fp16; the KV
cache is fp16. Sparsity only shrinks storage where the hardware declares a format for its pattern.
"""

from __future__ import annotations

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.hardware import HardwareProfile

FP16_BYTES = 2
KV_BYTES = 2
# Index cost of sparse formats, in bits per stored non-zero: 2:4 keeps 2-bit positions;
# unstructured sparsity keeps a bitmask of 1 bit per weight (2 bits per non-zero at 50%).
SPARSE_INDEX_BITS = {"2:4": 2.0, "unstructured": 2.0}


def matmul_bytes_per_weight(compression: CompressionConfig, hardware: HardwareProfile) -> float:
    """Stored bytes per linear-layer weight, averaged over zeros and non-zeros."""
    bits = compression.bits_per_weight
    pattern = compression.sparsity_pattern
    if pattern != "none" and pattern in hardware.sparse_storage:
        density = 1.0 - compression.sparsity
        bits = density * (bits + SPARSE_INDEX_BITS[pattern])
    return bits / 8.0


def other_weights(arch: ArchConfig) -> int:
    """Weights outside the blocks' linear layers: embeddings, LM head, norms (kept in fp16)."""
    return arch.params - arch.matmul_params


def stored_weight_bytes(candidate: Candidate, hardware: HardwareProfile) -> float:
    arch = candidate.arch
    per_weight = matmul_bytes_per_weight(candidate.compression, hardware)
    return arch.matmul_params * per_weight + other_weights(arch) * FP16_BYTES


def active_matmul_params(arch: ArchConfig) -> int:
    """Linear-layer weights one token multiplies: the chosen experts only."""
    idle = (arch.n_experts - arch.experts_per_token) * arch.mlp_params * arch.n_moe_layers
    return arch.matmul_params - idle


def kv_cache_bytes(arch: ArchConfig, tokens: int) -> float:
    """Keys and values of `tokens` positions in every layer."""
    return 2.0 * arch.n_layers * arch.n_kv_heads * arch.head_dim * tokens * KV_BYTES
