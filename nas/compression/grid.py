"""ONNX Runtime's MatMulNBits quantization grid, written in torch, so that methods which choose
their own integer codes (GPTQ, QAT) land on exactly the grid the device runs.

ONNX Runtime's symmetric block quantizer (MLAS `range2scale` + `quantizeAndTranspose`) does, per
output row and per block of `group_size` consecutive inputs:

    extremum = max if |max| > |min| else min          (the block's signed extremum)
    scale    = extremum / -2^(bits-1)                 (float32; negative for a positive extremum)
    code     = clamp(roundf(w * (1 / scale) + 2^(bits-1)), 0, 2^bits - 1)   (roundf: half away)
    value    = (code - 2^(bits-1)) * scale

Here codes are kept centred (`code - 2^(bits-1)`, in [-2^(bits-1), 2^(bits-1) - 1]). A block whose
values are `codes * scale` with at least one code at -2^(bits-1) is a fixed point of that
quantizer (its extremum is that element, so the same scale comes back), which is how GPTQ-chosen
codes stay bit-for-bit the weights the exported int model holds; tests/compression/test_grid.py
checks every function here against the ONNX Runtime kernel.
"""

from __future__ import annotations

import torch


def _blocks(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """[..., in] -> [..., blocks, group_size], zero-padded as ONNX Runtime pads the last block."""
    pad = -weight.shape[-1] % group_size
    padded = torch.nn.functional.pad(weight, (0, pad)) if pad else weight
    return padded.reshape(*weight.shape[:-1], -1, group_size)


def _unblocks(blocks: torch.Tensor, width: int) -> torch.Tensor:
    return blocks.reshape(*blocks.shape[:-2], -1)[..., :width]


def signed_extremum(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The element of largest magnitude along `dim`, the negative one on a tie (as MLAS picks)."""
    high, low = values.amax(dim), values.amin(dim)
    return torch.where(high.abs() > low.abs(), high, low)


def scales_of(values: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """ONNX Runtime's float32 scale of each block (reduced along `dim`)."""
    return (signed_extremum(values.float(), dim) / -float(2 ** (bits - 1))).float()


def codes_for(values: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Centred integer codes of `values` on blocks of scale `scale` (broadcast), as float32.

    `roundf(y)` then the clamp to [0, 2^bits - 1] equals `floor(y + 0.5)` then the clamp: for
    y >= 0 the sum y + 0.5 is exact below the clamp's top (its ulp divides 0.5), and for y < 0
    both clamp to 0."""
    mid = float(2 ** (bits - 1))
    scale = scale.float()
    reciprocal = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    shifted = torch.floor(values.float() * reciprocal + mid + 0.5)
    return shifted.clamp_(0.0, 2 * mid - 1) - mid


def fake_quantize(weight: torch.Tensor, *, bits: int, group_size: int) -> torch.Tensor:
    """Round-to-nearest on ONNX Runtime's grid along the last dimension (any leading shape),
    returned dequantized in float32: equal to `quantize.quantize_dequantize` bit for bit."""
    blocks = _blocks(weight.float(), group_size)
    scale = scales_of(blocks, bits).unsqueeze(-1)
    return _unblocks(codes_for(blocks, scale, bits) * scale, weight.shape[-1])


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized weight; backward: the gradient passes unchanged (STE)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
        return fake_quantize(weight, bits=bits, group_size=group_size).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def fake_quantize_ste(weight: torch.Tensor, *, bits: int, group_size: int) -> torch.Tensor:
    """`fake_quantize` with a straight-through gradient, for quantization-aware training."""
    return _StraightThrough.apply(weight, bits, group_size)
