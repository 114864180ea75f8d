"""Mixture of experts for ExecuTorch: equivalent expert kernels that `torch.export` captures.

The `transformers` expert kernel loops over data-dependent expert hits and does not export, so
`exportable_moe` swaps in an equivalent formulation (same logits, checked in
tests/onnx/test_export.py). ONNX graphs use ONNX Runtime's fused MoE operator instead
(`nas.onnx.moe_op`). Decode gathers only the chosen experts' weights (what a device reads);
prefill runs every expert on every prompt token and weights the outputs by the routing scores
(ONNX Runtime has no CPU grouped-GEMM). Expert weights are gathered, not multiplied as constant
MatMul inputs, so the quantizers leave them in float.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

Phase = Literal["decode", "prefill"]


class _GatheredExperts(torch.nn.Module):
    """Each token multiplies only its top-k experts' weights, gathered by index (decode).

    Written as `index_select` + `bmm` (and the weighted sum as one more `bmm`): XNNPACK runs
    batched matrix products with both operands computed, so only the gather copy is left to
    ExecuTorch's portable kernels. The einsum form this replaced lowered to a broadcast multiply
    and a portable `sum`, 23x slower (38.6 against 1.65 ms for 3 layers of 8 experts, d 192)."""

    def __init__(self, experts: torch.nn.Module) -> None:
        super().__init__()
        self.gate_up_proj = experts.gate_up_proj  # [E, 2F, D]
        self.down_proj = experts.down_proj  # [E, D, F]
        self.act_fn = experts.act_fn

    def forward(self, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor):
        tokens, k = index.shape
        chosen = index.reshape(-1)  # token-major: row t * k + j is token t's j-th expert
        rows = hidden.repeat_interleave(k, dim=0).unsqueeze(-1)  # [T*k, D, 1]
        gate_up = torch.bmm(self.gate_up_proj.index_select(0, chosen), rows)  # [T*k, 2F, 1]
        gate, up = gate_up.chunk(2, dim=1)
        out = torch.bmm(self.down_proj.index_select(0, chosen), self.act_fn(gate) * up)
        out = out.view(tokens, k, -1)  # [T, k, D]
        mix = weights.to(out.dtype).unsqueeze(1)  # [T, 1, k]
        return torch.bmm(mix, out).squeeze(1)


class _DenseExperts(torch.nn.Module):
    """Every expert runs on every token; outputs are weighted by the routing scores (prefill)."""

    def __init__(self, experts: torch.nn.Module) -> None:
        super().__init__()
        self.gate_up_proj = experts.gate_up_proj
        self.down_proj = experts.down_proj
        self.act_fn = experts.act_fn
        self.num_experts = experts.num_experts

    def forward(self, hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor):
        scores = torch.zeros(
            hidden.shape[0], self.num_experts, dtype=hidden.dtype, device=hidden.device
        ).scatter(1, index, weights.to(hidden.dtype))
        gate_up = torch.einsum("efd,td->etf", self.gate_up_proj, hidden)
        gate, up = gate_up.chunk(2, dim=-1)
        out = torch.einsum("edf,etf->etd", self.down_proj, self.act_fn(gate) * up)
        return torch.einsum("etd,te->td", out, scores)


@contextlib.contextmanager
def exportable_moe(model: torch.nn.Module, phase: Phase) -> Iterator[torch.nn.Module]:
    """Temporarily replace every MoE block's expert kernel with an exportable equivalent."""
    kernel = _GatheredExperts if phase == "decode" else _DenseExperts
    swapped: list[tuple[torch.nn.Module, torch.nn.Module]] = []
    for module in model.modules():
        experts = getattr(module, "experts", None)
        if experts is not None and hasattr(experts, "gate_up_proj"):
            swapped.append((module, experts))
            module.experts = kernel(experts)
    try:
        yield model
    finally:
        for module, experts in swapped:
            module.experts = experts
