"""The work each coefficient of the calibrated predictor multiplies (`predictors.calibrated`): one
row of features per candidate and quantity, in `FEATURES`' order.

The form is the roofline's, written as a sum of costs (batch-1 decode is memory-bound, prefill
compute-bound, so one side of the roofline's max dominates each):

    decode_ms  = c0 + c_call * (matrix multiplications one token runs: `gemm_calls`)
                 + sum over weight formats f of c_f * (weights in format f that one token reads)
                 + c_expert * (float routed experts' weights one token reads) + c_kv * (KV elements)
                 + c_attn * (query heads x head width x context: the attention's own work)
                 + c_spill * (MiB one token reads beyond `cache_mb`, the cache it fits in)
    prefill_ms = c0 + c_layer * (layers + MoE layers) + the same weight terms with multiply-adds
                 over the prompt and the causal attention's
                 + c_act * (activation elements the blocks' norms, residuals and MLP gates touch)
                 + c_block * (int8/int4 multiply-adds / group_size: `quant_blocks`)
    memory_mb  = m0 + sum over formats f of m_f * (MiB of weights stored in f) + m_kv * (KV MiB)

Weight formats are the exported graph's (nas.onnx.export): `float` (fp32 on CPUs: the embedding
table, the LM head, and 16-bit candidates' blocks), `int8` and `int4` (both MatMulNBits, with
int8 compute on CPUs: `predictors.conditions.activations_of`). Mixture of experts, in ONNX
Runtime: one fused `MoE` node per block, `QMoE` with the blocks' int8/int4 format when the expert
widths hold whole groups (`nas.hardware.qmoe_block`); quantized routed experts count in their
format's term, float ones (fp32 candidates, ragged widths) in the expert term, and both read and
multiply only the chosen experts, at prefill too. In ExecuTorch experts stay float weights
gathered per token (`nas.onnx.moe`) and every expert runs on every prompt token.
Each coefficient (`predictors.calibrated`) is the device's cost of one unit of that work: the
inverse of an effective bandwidth or throughput, or a fixed overhead. Resident memory is not
proportional to bits: on this machine's ONNX Runtime CPU provider an int8 MatMulNBits weight
measured ~3.7 bytes resident and an int4 one ~1.1 (local_cpu.json), so each format's memory has
its own coefficient.
Coefficients are fitted by non-negative least squares on relative error, so more work is never
predicted faster.

Two decode terms came from the stored `local_cpu` measurements (BENCHMARKS.md, issue 15): the
attention reads the KV cache once per KV head but works once per *query* head (grouped-query
attention saves reads, not work), and a model whose weights and cache fit in the CPU's cache
decodes faster per weight than one streamed from DRAM. `cache_mb` is picked per device at
calibration, from `predictors.calibrated.CACHE_GRID_MB` by leave-one-out error (no spill term
when none helps). Prefill's `activations` term is the element-wise work (norms, residual adds,
gates) the multiply-adds miss.

Decode's fixed cost per token is counted in matrix multiplications, not in layers: ONNX Runtime's
profile of a decode step (BENCHMARKS.md, 2026-12-07) shows each small multiplication costing
microseconds beyond its bytes, and a mixture-of-experts layer runs a router and three per chosen
expert where a dense MLP runs three. The per-layer count priced deep, narrow and MoE models
15-25% too fast; the count of multiplications won among four forms on random splits of the stored
measurements and on three fresh draws of 50 graphs. Prefill's `quant_blocks` term prices the
per-group work of int8-compute kernels: on one VM int4 with groups of 32 prefilled 10-24% slower
than the form without it predicted, and groups of 128 faster; where a device shows no such cost the
fit sets it to 0.

ONNX Runtime's MatMulNBits pads each layer's input width up to whole groups
(`footprint.padded_params`), so its int8/int4 terms count the padded weights and multiply-adds: in
groups of 128 a model of width 192 prefilled 40% slower per counted multiply-add than one of width
256 (ONNX Runtime's profile).
"""

from __future__ import annotations

import math

import numpy as np

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.hardware import HardwareProfile
from predictors.footprint import (
    expert_params,
    experts_quantized,
    float_bytes,
    linear_weights,
    other_weights,
    prefill_experts,
)

MB = 1024.0 * 1024.0
QUANT_BYTES = {8: 1.0, 4: 0.5}
FEATURES = {
    "decode_ms": (
        "fixed",
        "calls",
        "float_w",
        "int8_w",
        "int4_w",
        "float_expert_w",
        "kv",
        "attention",
        "spill",
    ),
    "prefill_ms": (
        "fixed",
        "layers",
        "float_mac",
        "int8_mac",
        "int4_mac",
        "float_expert_mac",
        "attention",
        "activations",
        "quant_blocks",
    ),
    "memory_mb": ("fixed", "float_mb", "int8_mb", "int4_mb", "kv_mb"),
}
FORMATS = ("float", "int8", "int4")


def gemm_calls(arch: ArchConfig) -> int:
    """Matrix multiplications one decoded token runs: per layer q, k, v, o and the attention's
    two (scores, mix); a dense MLP's gate, up and down; in a mixture-of-experts layer the router
    and gate, up and down of each chosen expert; then the LM head."""
    n_dense = arch.n_layers - arch.n_moe_layers
    moe = arch.n_moe_layers * (1 + 3 * arch.experts_per_token)
    return 6 * arch.n_layers + 3 * n_dense + moe + 1


def quant_blocks(macs: dict[str, float], compression: CompressionConfig) -> float:
    """Blocks of `group_size` multiply-adds the int8/int4 layers run: each block's activations
    are quantized and its partial sum scaled apart, so the work beyond the multiply-adds grows as
    the groups shrink (0 for float and per-channel weights)."""
    if compression.weight_bits == 16 or compression.group_size <= 0:
        return 0.0
    return (macs["int8"] + macs["int4"]) / compression.group_size


def features(
    candidate: Candidate, hardware: HardwareProfile, cache_mb: float = math.inf
) -> dict[str, np.ndarray]:
    """The work each quantity's coefficients multiply (see module doc and `FEATURES`).

    Weights in millions, multiply-adds in billions (decode attention: millions), bytes in MiB;
    `cache_mb`: the cache decode's reads fit in (the calibration's).
    """
    arch, comp = candidate.arch, candidate.compression
    context, prompt = hardware.deploy.context_len, hardware.deploy.prompt_len
    runtime = hardware.runtime
    width = float(float_bytes(hardware))  # the export's float: fp32 on CPUs, fp16 on GPUs
    head = arch.vocab_size * arch.d_model  # the LM head, always float
    fmt = {16: "float", 8: "int8", 4: "int4"}[comp.weight_bits]
    # The blocks' linear layers as the runtime holds them (`linear_weights`): in `fmt`, padding
    # included, or left float. ONNX Runtime's MoE multiplies the chosen experts only, ExecuTorch's
    # prefill every expert (nas.onnx.moe). Float routed experts have their own term, wherever
    # `linear_weights` counts them.
    experts_run = prefill_experts(arch, runtime)
    decoded = linear_weights(candidate, runtime, arch.experts_per_token)
    prefilled = linear_weights(candidate, runtime, experts_run)
    stored_linear = linear_weights(candidate, runtime, arch.n_experts)
    quantized = experts_quantized(candidate, runtime)
    float_expert_w = 0 if quantized else expert_params(arch, arch.experts_per_token)
    float_expert_mac = 0 if quantized else prompt * expert_params(arch, experts_run)
    decode_w = dict.fromkeys(FORMATS, 0.0) | {"float": float(head - float_expert_w)}
    decode_w[fmt] += decoded.compressed
    decode_w["float"] += decoded.left_float
    # The head multiplies the last position only (prefill returns its logits)
    prefill_mac = dict.fromkeys(FORMATS, 0.0) | {"float": float(head - float_expert_mac)}
    prefill_mac[fmt] += prompt * prefilled.compressed
    prefill_mac["float"] += prompt * prefilled.left_float
    kv_elements = 2.0 * arch.n_layers * arch.n_kv_heads * arch.head_dim * context
    attention = 2.0 * arch.n_layers * arch.n_heads * arch.head_dim * prompt * prompt
    # Element-wise work over the prompt: every block's residual width, and the hidden width of
    # the MLPs it runs (in MoE layers `experts_run`).
    mlp_width = (arch.n_layers - arch.n_moe_layers) * arch.ffn_dim + (
        arch.n_moe_layers * experts_run * arch.ffn_dim
    )
    activations = prompt * (arch.n_layers * arch.d_model + mlp_width)
    # Weights as the runtime holds them: quantized blocks, float everything else (a tied LM
    # head as its own copy: `other_weights`).
    stored = dict.fromkeys(FORMATS, 0.0)
    stored["float"] = (stored_linear.left_float + other_weights(arch)) * width
    per_weight = width if fmt == "float" else QUANT_BYTES[comp.weight_bits]
    stored[fmt] += stored_linear.compressed * per_weight
    layers = float(arch.n_layers + arch.n_moe_layers)
    calls = float(gemm_calls(arch))
    decode = [1.0, calls, *(decode_w[f] / 1e6 for f in FORMATS), float_expert_w / 1e6]
    query_attention = 2.0 * arch.n_layers * arch.n_heads * arch.head_dim * context
    read_bytes = (
        (decode_w["float"] + float_expert_w + kv_elements) * width
        + decode_w["int8"] * QUANT_BYTES[8]
        + decode_w["int4"] * QUANT_BYTES[4]
    )
    spill = max(0.0, read_bytes / MB - cache_mb)  # 0 with no cache term (cache_mb = inf)
    prefill = [1.0, layers, *(prefill_mac[f] / 1e9 for f in FORMATS), float_expert_mac / 1e9]
    return {
        "decode_ms": np.array([*decode, kv_elements / 1e6, query_attention / 1e6, spill]),
        "prefill_ms": np.array(
            [*prefill, attention / 1e9, activations / 1e6, quant_blocks(prefill_mac, comp) / 1e6]
        ),
        "memory_mb": np.array([1.0, *(stored[f] / MB for f in FORMATS), kv_elements * width / MB]),
    }
