"""GPTQ-style weight quantization (Frantar et al., 2022), on ONNX Runtime's MatMulNBits grid.

Per matrix W [out, in] with the Gram matrix H of its calibration inputs: columns are quantized one
at a time and each column's rounding error is spread over the columns not yet quantized through
the inverse Hessian (the optimal-brain-surgeon update), so the layer's output error
||W X - Q X|| is minimised greedily instead of each weight's own error. `act_order` quantizes
columns in order of decreasing H_jj (the inputs that matter most go first, while the most
freedom is left to compensate them). Layers run in order with the earlier ones already quantized
(`nas.compression.calibration.sequential`).

Grid: every (row, group) block keeps ONNX Runtime's symmetric scale (signed extremum / -2^(b-1))
computed when the block's first column is reached, and the element that set it keeps the code
-2^(b-1); so the block is a fixed point of ONNX Runtime's quantizer, and the weights written back
are bit for bit the int weights of the exported model (`quantize_dequantize` of them changes
nothing; tests/compression/test_gptq.py checks it). Pruned weights (a sparsity mask) stay zero.
Where GPTQ's greedy order ends with a larger calibration error than round-to-nearest on a matrix
(it can, rarely, with the pinned extremum), that matrix keeps round-to-nearest and the recipe
counts it.

Why hand-written (checked 2026-12-01 with `pip download --no-deps` and the wheels' metadata):
gptqmodel 7.7 requires torch >= 2.14.1 and transformers >= 5.20.2 (we pin torch 2.13 CPU);
llmcompressor 0.14.0.1 pins transformers <= 5.17 (we run 5.24); auto-gptq 0.7.1 is archived and
ships CUDA kernels; torchao 0.18's `prototype.gptq` asserts a CUDA device and quantizes to its own
asymmetric int4 grid (zero points, `mslk` kernels), not the grid ONNX Runtime runs.
"""

from __future__ import annotations

import torch

from nas.compression.calibration import Stats, one_thread, row_errors
from nas.compression.grid import scales_of
from nas.compression.quantize import quantize_dequantize


def _inverse_hessian_factor(gram: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, in float64."""
    h = gram.double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += torch.eye(len(h), dtype=h.dtype) * damp * torch.diagonal(h).mean()
    for attempt in range(6):  # a nearly singular H (few tokens): more damping until it factors
        factor, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            break
        h += torch.eye(len(h), dtype=h.dtype) * damp * torch.diagonal(h).mean() * 10**attempt
    inverse = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(inverse, upper=True)


BLOCK = 128  # columns per lazy batch update (the reference implementation's block)


@torch.no_grad()
@one_thread()
def gptq_quantize(
    weight: torch.Tensor,
    stats: Stats,
    *,
    bits: int,
    group_size: int,
    act_order: bool = True,
    damp: float = 0.01,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`weight` [out, in] GPTQ-quantized on ONNX Runtime's grid, returned dequantized (float32).

    Args:
        stats: the matrix's calibration input statistics (its Gram matrix is H).
        mask: keep-mask of a sparsity pattern; masked-out weights are quantized to zero.
    """
    cols = weight.shape[1]
    order = (
        torch.argsort(torch.diagonal(stats.gram), descending=True, stable=True)
        if act_order
        else torch.arange(cols)
    )
    w = weight.detach().double().cpu()[:, order].clone()
    keep = None if mask is None else mask.cpu()[:, order].bool()
    u = _inverse_hessian_factor(stats.gram[order][:, order], damp)
    diag = torch.diagonal(u).tolist()
    state = _Blocks(w, keep, order, group_size, bits)
    for start in range(0, cols, BLOCK):
        end = min(start + BLOCK, cols)
        err = torch.zeros(w.shape[0], end - start, dtype=torch.float64)
        for j in range(end - start):
            i = start + j
            state.touch(state.group_of[i], end, err[:, :j], u, start)
            column = w[:, i]
            torch.div(column - state.quantize(i, column), diag[i], out=err[:, j])
            w[:, i + 1 : end].addr_(err[:, j], u[i, i + 1 : end], alpha=-1.0)
        w[:, end:].addmm_(err, u[start:end, end:], alpha=-1.0)
    return state.dequantized()


class _Blocks:
    """The (row, group) blocks of one matrix: scale set when a group is first reached, the
    pinned extremum, and the chosen codes (in processing order)."""

    def __init__(self, w, keep, order, group_size: int, bits: int) -> None:
        self.w, self.keep, self.order = w, keep, order
        self.mid, self.bits = float(2 ** (bits - 1)), bits
        rows, cols = w.shape
        groups = order // group_size
        self.group_of = groups.tolist()
        self.members = {int(g): (groups == g).nonzero().flatten() for g in torch.unique(groups)}
        n_groups = -(-cols // group_size)
        self.scale = torch.zeros(rows, n_groups, dtype=torch.float32)
        self.reciprocal = torch.zeros(rows, n_groups, dtype=torch.float32)
        self.touched = [False] * n_groups
        self.pinned = torch.zeros(rows, cols, dtype=torch.bool)  # the element that set a scale
        self.codes = torch.zeros(rows, cols, dtype=torch.float32)

    def touch(self, g: int, end: int, err: torch.Tensor, u: torch.Tensor, start: int) -> None:
        """At a group's first column: its scale from its columns' current values (columns past
        the block, `end`, still lack the block's lazy updates `err`: added here)."""
        if self.touched[g]:
            return
        self.touched[g] = True
        cols = self.members[g]
        current = self.w[:, cols].clone()
        beyond = cols >= end
        if err.shape[1] and bool(beyond.any()):
            current[:, beyond] -= err @ u[start : start + err.shape[1], cols[beyond]]
        if self.keep is not None:
            current = torch.where(self.keep[:, cols], current, 0.0)
        block = current.float()
        scale = scales_of(block, self.bits)
        self.scale[:, g] = scale
        self.reciprocal[:, g] = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        hit = block == scale[:, None] * -self.mid
        self.pinned[torch.arange(len(scale)), cols[hit.float().argmax(1)]] = True

    def quantize(self, i: int, column: torch.Tensor) -> torch.Tensor:
        """Column i's codes on its group's scale: ONNX Runtime's roundf(w / s + mid), which for
        a non-negative argument is floor(. + 0.5) exactly; returns the values (float64)."""
        g = self.group_of[i]
        y = column.float() * self.reciprocal[:, g] + self.mid
        c = torch.floor(y + 0.5).clamp_(0.0, 2 * self.mid - 1) - self.mid
        c = torch.where(self.pinned[:, i], -self.mid, c)
        if self.keep is not None:
            c = torch.where(self.keep[:, i], c, 0.0)
        self.codes[:, i] = c
        return (c * self.scale[:, g]).double()

    def dequantized(self) -> torch.Tensor:
        rows, cols = self.codes.shape
        result = torch.empty(rows, cols, dtype=torch.float32)
        result[:, self.order] = self.codes * self.scale[:, self.group_of]
        return result


def quantize_matrix(
    weight: torch.Tensor,
    stats: Stats,
    *,
    bits: int,
    group_size: int,
    act_order: bool = True,
    damp: float = 0.01,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """(the shipped weights, rows that kept round-to-nearest): GPTQ, except in rows where
    round-to-nearest reconstructs the calibration outputs better (the error is a sum over rows
    and each row's blocks are independent on the grid, so the choice is per row and the matrix
    is never worse than round-to-nearest). Either way the result is exactly what ONNX Runtime's
    quantizer makes of it."""
    gptq = gptq_quantize(
        weight, stats, bits=bits, group_size=group_size, act_order=act_order, damp=damp, mask=mask
    )
    shipped = quantize_dequantize(gptq, bits=bits, group_size=group_size)
    if not torch.equal(shipped, gptq):  # a bug, never a rounding question: refuse to mis-score
        raise RuntimeError("GPTQ weights are off ONNX Runtime's grid")
    source = weight.detach().float().cpu()
    if mask is not None:
        source = source * mask.cpu()
    rtn = quantize_dequantize(source, bits=bits, group_size=group_size)
    worse = row_errors(weight, gptq, stats) > row_errors(weight, rtn, stats)
    return torch.where(worse[:, None], rtn, gptq), int(worse.sum())
