"""Mixture of experts as ONNX Runtime runs it: the `com.microsoft` `MoE` / `QMoE` operators.

A deployer exporting a mixture-of-experts model for ONNX Runtime (onnxruntime-genai's model
builder does this) writes each MoE block as one `MoE` node, and `QMoE` when quantized: routing,
the chosen experts' SwiGLU and the weighted sum in one fused kernel that reads only the chosen
experts' weights, at decode and at prefill. `ort_moe` swaps every sparse MoE block of a
`transformers` model for `_OrtMoeBlock`, whose forward is the custom op `slm_nas::moe`: in torch it
computes what the block computes (checked in tests/onnx/test_moe_op.py); `TRANSLATIONS` tells
`torch.onnx.export` to write it as an `MoE` node. `nas.onnx.qmoe` turns those nodes into `QMoE`
with int8/int4 expert weights, beside the MatMulNBits of the other layers.

Layouts are the operator's: fc1 [experts, 2 * ffn, d_model] with gate and up rows interleaved
(`swiglu_fusion=1`), fc2 [experts, d_model, ffn]; routing is softmax over the top-k logits
(`normalize_routing_weights=1`), which is Qwen3-MoE's softmax, top-k and renormalisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from nas.errors import NasError
from nas.onnx.qmoe import ATTRIBUTES


@torch.library.custom_op("slm_nas::moe", mutates_args=())
def moe(
    hidden: torch.Tensor, router_logits: torch.Tensor, fc1: torch.Tensor, fc2: torch.Tensor, k: int
) -> torch.Tensor:
    """hidden [tokens, d_model] -> [tokens, d_model], as the `MoE` operator computes it."""
    weights, index = torch.topk(router_logits.float(), k, dim=-1)
    weights = torch.softmax(weights, dim=-1).to(hidden.dtype)  # softmax over the top-k logits
    gate_up = torch.einsum("tknd,td->tkn", fc1[index], hidden)
    gate, up = gate_up[..., 0::2], gate_up[..., 1::2]
    out = torch.einsum("tkdf,tkf->tkd", fc2[index], torch.nn.functional.silu(gate) * up)
    return (out * weights.unsqueeze(-1)).sum(dim=1)


@moe.register_fake
def _(hidden, router_logits, fc1, fc2, k):
    return torch.empty_like(hidden)


def _moe_schema():
    """The inputs and attributes of ONNX Runtime's `MoE` that we use: onnx ships no schema for
    ONNX Runtime's contrib operators, and onnxscript needs one to write a node."""
    from onnx.defs import OpSchema

    def tensor(name: str, optional: bool = False) -> OpSchema.FormalParameter:
        option = OpSchema.FormalParameterOption
        return OpSchema.FormalParameter(
            name, "T", param_option=option.Optional if optional else option.Single
        )

    kind = OpSchema.AttrType
    kinds = {int: kind.INT, float: kind.FLOAT, str: kind.STRING}
    attributes = [OpSchema.Attribute("k", OpSchema.AttrType.INT, "experts per token")]
    attributes += [OpSchema.Attribute(n, kinds[type(v)], n) for n, v in ATTRIBUTES.items()]
    return OpSchema(
        "MoE",
        "com.microsoft",
        1,
        inputs=[tensor("input"), tensor("router_probs"), tensor("fc1_experts_weights"),
                tensor("fc1_experts_bias", optional=True), tensor("fc2_experts_weights")],
        outputs=[tensor("output")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "float activations")],
        attributes=attributes,
    )  # fmt: skip


def _moe_onnx(hidden, router_logits, fc1, fc2, k: int):
    import onnxscript

    microsoft = onnxscript.values.Opset("com.microsoft", 1)
    node = onnxscript.values.Op(microsoft, "MoE", _moe_schema())
    return node(hidden, router_logits, fc1, None, fc2, k=k, **ATTRIBUTES)


TRANSLATIONS = {torch.ops.slm_nas.moe.default: _moe_onnx}


class _OrtMoeBlock(torch.nn.Module):
    """A Qwen3-MoE sparse block as one `slm_nas::moe` call on interleaved expert weights."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        if not block.gate.norm_topk_prob:  # MoE renormalises the top-k weights; so must the model
            raise NasError("ONNX export of MoE needs norm_topk_prob=True routing")
        self.router = block.gate.weight  # [experts, d_model]
        self.k = int(block.gate.top_k)
        gate_up = block.experts.gate_up_proj.detach()  # [E, 2F, D]: gate rows, then up rows
        gate, up = gate_up.chunk(2, dim=1)
        self.register_buffer("fc1", torch.stack((gate, up), dim=2).flatten(1, 2), persistent=False)
        self.register_buffer("fc2", block.experts.down_proj.detach(), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])
        logits = torch.nn.functional.linear(flat, self.router)
        return moe(flat, logits, self.fc1, self.fc2, self.k).reshape(hidden.shape)


def _sparse_blocks(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str]]:
    for parent in model.modules():
        for name, child in parent.named_children():
            if hasattr(getattr(child, "experts", None), "gate_up_proj") and hasattr(child, "gate"):
                yield parent, name


@contextlib.contextmanager
def ort_moe(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily replace every sparse MoE block with its `MoE`-operator form."""
    swapped = []
    for parent, name in list(_sparse_blocks(model)):
        block = getattr(parent, name)
        swapped.append((parent, name, block))
        setattr(parent, name, _OrtMoeBlock(block))
    try:
        yield model
    finally:
        for parent, name, block in swapped:
            setattr(parent, name, block)
