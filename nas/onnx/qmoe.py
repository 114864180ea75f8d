"""int8/int4 expert weights: every `MoE` node of an exported graph (`nas.onnx.moe_op`) becomes a
`QMoE` node, ONNX Runtime's quantized mixture of experts, in the format the graph's other layers
get from the MatMulNBits quantizer: symmetric, one scale per `group_size` weights along the input
dimension (the implicit zero point, 2^(bits-1), is the operator's default), int8 activations on
the fly when `accuracy_level` is 4. With `group_size` None the scales are per output channel (the
`dynamic` int8 method's format).

The packing is written here because `onnxruntime.quantization` quantizes MatMul and Gather nodes
only. The block is the largest power of two up to `group_size` that both expert widths hold
whole (`block_for`); experts whose widths hold not even 16 stay a float `MoE` node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nas.hardware import MOE_KERNELS
from nas.hardware import qmoe_block as block_for

KERNEL = MOE_KERNELS["onnxruntime"]  # the MoE blocks are com.microsoft MoE/QMoE nodes

ATTRIBUTES = {  # of both operators, as nas.onnx.moe_op writes the blocks
    "activation_type": "swiglu",
    "swiglu_fusion": 1,
    "normalize_routing_weights": 1,
    "activation_alpha": 1.0,  # swiglu = g * sigmoid(alpha * g) * (l + beta) = silu(g) * l
    "activation_beta": 0.0,
}


def pack(weights: np.ndarray, bits: int, group_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of [experts, out, in] weights: (uint8 [experts, out, in * bits / 8],
    float scales [experts, out, in / group] or [experts, out] per channel)."""
    experts, rows, cols = weights.shape
    group = group_size or cols
    blocks = weights.reshape(experts, rows, cols // group, group).astype(np.float32)
    largest = 2 ** (bits - 1) - 1  # 127, 7: symmetric, so 0 stays exactly 0
    scales = np.abs(blocks).max(axis=-1) / largest
    scales[scales == 0] = 1.0
    codes = np.clip(np.rint(blocks / scales[..., None]), -largest - 1, largest)
    codes = (codes + 2 ** (bits - 1)).astype(np.uint8).reshape(experts, rows, cols)
    if bits == 4:  # two per byte, the first in the low nibble
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = scales.astype(np.float32)
    return codes, (scales if group_size else scales[..., 0])


def quantize_moe_nodes(
    model: Any, *, bits: int, group_size: int | None, accuracy_level: int | None
) -> int:
    """Rewrite `model`'s (an onnx.ModelProto) MoE nodes as QMoE in place; returns how many.

    Float expert weights no other node reads are dropped from the initializers."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    rewritten = 0
    for position, node in enumerate(list(graph.node)):
        if node.op_type != "MoE" or node.domain != "com.microsoft":
            continue
        fc1_name, fc2_name = node.input[2], node.input[4]
        if fc1_name not in initializers or fc2_name not in initializers:
            continue  # weights computed in the graph: nothing to quantize ahead of time
        fc1 = numpy_helper.to_array(initializers[fc1_name])
        fc2 = numpy_helper.to_array(initializers[fc2_name])
        block = group_size and block_for(fc1.shape[2], fc2.shape[2], group_size)
        if group_size and not block:
            continue
        names = []
        for label, weights in (("fc1", fc1), ("fc2", fc2)):
            codes, scales = pack(weights, bits, block)
            stem = f"{node.name}.{label}_q{bits}"
            graph.initializer.append(numpy_helper.from_array(codes, f"{stem}.weight"))
            graph.initializer.append(numpy_helper.from_array(scales, f"{stem}.scales"))
            names += [f"{stem}.weight", f"{stem}.scales"]
        k = next(a.i for a in node.attribute if a.name == "k")
        extra: dict[str, Any] = {"expert_weight_bits": bits}
        if block:
            extra["block_size"] = block
        if accuracy_level is not None:
            extra["accuracy_level"] = accuracy_level
        quantized = helper.make_node(
            "QMoE",
            [node.input[0], node.input[1], names[0], names[1], "", names[2], names[3]],
            list(node.output),
            name=f"{node.name}_q{bits}",
            domain="com.microsoft",
            k=k,
            **ATTRIBUTES,
            **extra,
        )
        graph.node.remove(node)
        graph.node.insert(position, quantized)
        for name in (fc1_name, fc2_name):
            readers[name] -= 1
            if readers[name] == 0:
                graph.initializer.remove(initializers.pop(name))
        rewritten += 1
    return rewritten
