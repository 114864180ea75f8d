"""Quantization-aware training: the decoder blocks' matrices compute with their quantized values
while the optimiser updates float weights behind them (straight-through gradients).

Every block matrix (the matrices `nas.compression.matrices` compresses: attention, SwiGLU,
experts, router) gets a `torch.nn.utils.parametrize` parametrization that returns
round-to-nearest on ONNX Runtime's MatMulNBits grid (`grid.fake_quantize_ste`, bit for bit the
exported quantizer); an optional keep-mask holds pruned weights at zero inside it. `convert`
removes the parametrizations leaving the quantized values in place, so the converted weights are
exactly the ones the last training step computed with, and exactly the exported int weights.

Why hand-written: torchao 0.18's QAT (`IntxFakeQuantizeConfig`) fake-quantizes to its own
symmetric grid (scale = max|w| / 7.5 for int4), not ONNX Runtime's (signed extremum / -8), so
the trained weights would not be the shipped ones.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from nas.compression.grid import fake_quantize_ste
from nas.compression.matrices import decoder_layers


class FakeQuantize(torch.nn.Module):
    """weight -> its `bits`-bit round-to-nearest value (times `mask`), straight-through."""

    def __init__(self, bits: int, group_size: int, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            weight = weight * self.mask
        return fake_quantize_ste(weight, bits=self.bits, group_size=self.group_size)


def _block_params(model: torch.nn.Module):
    """(module, parameter name) of every block matrix: 2-D weights and 3-D expert stacks."""
    for layer in decoder_layers(model):
        for module in layer.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if param.dim() in (2, 3):
                    yield module, name


def attach(
    model: torch.nn.Module, *, bits: int, group_size: int, keep_zeros: bool = False
) -> list[tuple[torch.nn.Module, str]]:
    """Fake-quantize every block matrix of `model` from now on; with `keep_zeros`, weights that
    are exactly zero now (a sparsity pattern) stay zero. Returns what `convert` undoes."""
    attached = []
    for module, name in list(_block_params(model)):
        weight = getattr(module, name)
        mask = (weight != 0).to(weight.dtype) if keep_zeros else None
        parametrize.register_parametrization(module, name, FakeQuantize(bits, group_size, mask))
        attached.append((module, name))
    return attached


@torch.no_grad()
def convert(attached: list[tuple[torch.nn.Module, str]]) -> None:
    """Replace each fake-quantized matrix by its quantized value (a plain parameter again)."""
    for module, name in attached:
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
