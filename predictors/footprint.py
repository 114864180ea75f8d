"""Bytes that a candidate's weights and KV cache occupy on a device: shared by the predictors.

Convention (also written into every export's recipe): the blocks' linear layers are stored at
`weight_bits` with one fp16 scale per group; embeddings, the LM head, norms, 16-bit candidates'
layers and the KV cache are float, as wide as the engine's exports hold them (`float_bytes`:
fp32 on CPUs, fp16 on GPUs). Sparsity only shrinks storage where the hardware declares a format
for its pattern.

Which layers a runtime's graph really holds at `weight_bits` is the runtime's
(`linear_weights`): ONNX Runtime's MatMulNBits pads each input width up to whole groups, its QMoE
takes experts only when their widths hold whole blocks, and ExecuTorch keeps experts float and,
at 4 bits, every layer its groups do not fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.hardware import HardwareProfile, float_dtype_on, qmoe_block

FLOAT_BYTES = {"fp32": 4, "fp16": 2}
# Index cost of sparse formats, in bits per stored non-zero: 2:4 keeps 2-bit positions;
# unstructured sparsity keeps a bitmask of 1 bit per weight (2 bits per non-zero at 50%).
SPARSE_INDEX_BITS = {"2:4": 2.0, "unstructured": 2.0}


def float_bytes(hardware: HardwareProfile) -> int:
    """Bytes of a float weight or KV-cache element in what the engine exports for `hardware`
    (`nas.hardware.float_dtype_on`: fp32 on CPUs, fp16 on GPUs)."""
    return FLOAT_BYTES[float_dtype_on(hardware.processor)]


def matmul_bytes_per_weight(
    compression: CompressionConfig, hardware: HardwareProfile, float_width: float
) -> float:
    """Stored bytes per linear-layer weight, averaged over zeros and non-zeros; a 16-bit
    candidate's are float, `float_width` bytes wide."""
    bits = compression.bits_per_weight if compression.weight_bits < 16 else 8.0 * float_width
    pattern = compression.sparsity_pattern
    if pattern != "none" and pattern in hardware.sparse_storage:
        density = 1.0 - compression.sparsity
        bits = density * (bits + SPARSE_INDEX_BITS[pattern])
    return bits / 8.0


def other_weights(arch: ArchConfig) -> int:
    """Float weights outside the blocks' linear layers as a runtime holds them: norms, the
    embedding and an LM head, tied or not. A tied head costs its own copy: ExecuTorch's program
    stores it twice, and ONNX Runtime's session, whose file stores it once, took as much memory
    tied as untied at vocabularies of 32k and 64k (BENCHMARKS.md). The calibrated features count
    the same."""
    norms = arch.params - arch.matmul_params - arch.embedding_params
    return norms + 2 * arch.vocab_size * arch.d_model


def stored_weight_bytes(candidate: Candidate, hardware: HardwareProfile) -> float:
    arch = candidate.arch
    stored = linear_weights(candidate, hardware.runtime, arch.n_experts)
    width = float_bytes(hardware)
    return stored.nbytes(candidate.compression, hardware, width) + other_weights(arch) * width


def active_matmul_params(arch: ArchConfig) -> int:
    """Linear-layer weights one token multiplies: the chosen experts only."""
    return arch.matmul_params - expert_params(arch, arch.n_experts - arch.experts_per_token)


def kv_cache_bytes(arch: ArchConfig, tokens: int, element_bytes: float) -> float:
    """Keys and values of `tokens` positions in every layer, `element_bytes` each."""
    return 2.0 * arch.n_layers * arch.n_kv_heads * arch.head_dim * tokens * element_bytes


def expert_params(arch: ArchConfig, experts: int) -> int:
    """Weights of `experts` experts in every MoE layer."""
    return arch.n_moe_layers * experts * arch.mlp_params


def prefill_experts(arch: ArchConfig, runtime: str) -> int:
    """Experts each prompt token runs: ONNX Runtime's MoE the chosen ones, ExecuTorch's gathered
    experts every one (nas.onnx.moe)."""
    return arch.n_experts if runtime == "executorch" else arch.experts_per_token


def experts_quantized(candidate: Candidate, runtime: str) -> bool:
    """Whether the exported graph holds the experts in the candidate's int8/int4 format: ONNX
    Runtime's QMoE does when the widths hold whole groups; ExecuTorch keeps them float."""
    arch, comp = candidate.arch, candidate.compression
    if not arch.is_moe or comp.weight_bits == 16 or runtime == "executorch":
        return False
    return qmoe_block(arch.d_model, arch.ffn_dim, comp.group_size) is not None


def _block_layers(arch: ArchConfig) -> list[tuple[int, int]]:
    """The blocks' linear layers outside the experts as (input width, output columns summed over
    layers): q, k, v, dense gate and up, and the routers read the residual; o reads the
    attention's width; a dense layer's down projection reads the FFN's."""
    attn = arch.n_heads * arch.head_dim
    kv = arch.n_kv_heads * arch.head_dim
    n_dense = arch.n_layers - arch.n_moe_layers
    residual = arch.n_layers * (attn + 2 * kv) + n_dense * 2 * arch.ffn_dim
    residual += arch.n_moe_layers * arch.n_experts
    return [
        (arch.d_model, residual),
        (attn, arch.n_layers * arch.d_model),
        (arch.ffn_dim, n_dense * arch.d_model),
    ]


def padded_params(arch: ArchConfig, group: int) -> int:
    """Weights ONNX Runtime's MatMulNBits adds to the blocks' layers (experts aside) by padding
    each one's input width up to a multiple of `group`: it stores and multiplies whole groups, so
    a width of 192 in groups of 128 costs as 256. QMoE's experts take a block that fits
    (`nas.hardware.qmoe_block`)."""
    if group <= 0:
        return 0
    return sum(columns * (-width % group) for width, columns in _block_layers(arch))


def unfit_params(arch: ArchConfig, group: int) -> int:
    """Block linear weights (experts aside) whose input width is no multiple of `group`: those
    ExecuTorch's int4 keeps float (the XNNPACK kernels take whole groups)."""
    if group <= 0:
        return 0
    return sum(columns * width for width, columns in _block_layers(arch) if width % group)


@dataclass(frozen=True)
class LinearWeights:
    """The blocks' linear weights a pass touches, as the runtime's graph holds them."""

    compressed: int  # in the candidate's format (16-bit: all), ONNX Runtime's padding included
    left_float: int  # layers of an int8/int4 candidate that the runtime keeps float

    def nbytes(
        self, compression: CompressionConfig, hardware: HardwareProfile, float_width: float
    ) -> float:
        """Their bytes: the compressed ones at the format's bytes per weight, the rest float,
        `float_width` bytes each."""
        per_weight = matmul_bytes_per_weight(compression, hardware, float_width)
        return self.compressed * per_weight + self.left_float * float_width


def linear_weights(candidate: Candidate, runtime: str, experts: int) -> LinearWeights:
    """The blocks' linear weights with `experts` experts per MoE layer (decode: the chosen ones;
    stored: all of them) as `runtime` holds them (see module doc)."""
    arch, comp = candidate.arch, candidate.compression
    total = arch.matmul_params - expert_params(arch, arch.n_experts - experts)
    if comp.weight_bits == 16:
        return LinearWeights(total, 0)
    float_experts = 0 if experts_quantized(candidate, runtime) else expert_params(arch, experts)
    if runtime == "executorch":
        unfit = unfit_params(arch, comp.group_size) if comp.weight_bits == 4 else 0
        return LinearWeights(total - float_experts - unfit, float_experts + unfit)
    padded = padded_params(arch, comp.group_size)
    return LinearWeights(total - float_experts + padded, float_experts)
