"""The torch copy of ONNX Runtime's MatMulNBits grid is bit for bit the ONNX Runtime kernel."""

from __future__ import annotations

import pytest
import torch

from nas.compression.grid import codes_for, fake_quantize, fake_quantize_ste, scales_of
from nas.compression.quantize import quantize_dequantize


@pytest.mark.parametrize(("bits", "group"), [(4, 16), (4, 32), (4, 128), (8, 32), (8, 128)])
def test_fake_quantize_is_onnx_runtimes_quantizer(bits: int, group: int) -> None:
    for seed in range(20):
        torch.manual_seed(seed)
        weight = torch.randn(24, 80) * torch.rand(1, 80) * 3  # 80: the last group is padded
        # exact grid points, ties at .5 and equal |max| == |min| blocks
        weight[:4, :16] = torch.randint(-8, 8, (4, 16)).float() * 0.25
        weight[4, :16] = torch.tensor([1.0, -1.0] * 8)
        weight[5] = 0.0
        expected = quantize_dequantize(weight, bits=bits, group_size=group)
        assert torch.equal(fake_quantize(weight, bits=bits, group_size=group), expected)


def test_codes_and_scales_rebuild_the_weights() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 32)
    scale = scales_of(weight, 4)  # one block per row (group 32)
    codes = codes_for(weight, scale[:, None], 4)
    assert codes.min() >= -8 and codes.max() <= 7
    assert torch.equal(codes * scale[:, None], quantize_dequantize(weight, bits=4, group_size=32))


def test_leading_dimensions_are_batched_experts() -> None:
    torch.manual_seed(1)
    experts = torch.randn(3, 16, 64)
    out = fake_quantize(experts, bits=4, group_size=32)
    for e in range(3):
        assert torch.equal(out[e], quantize_dequantize(experts[e], bits=4, group_size=32))


def test_straight_through_gradient() -> None:
    weight = torch.randn(4, 32, requires_grad=True)
    fake_quantize_ste(weight, bits=4, group_size=32).sum().backward()
    assert torch.equal(weight.grad, torch.ones(4, 32))
