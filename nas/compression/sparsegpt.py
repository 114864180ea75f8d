"""SparseGPT-style pruning (Frantar & Alistarh, 2023): pruning as sparse regression.

Per matrix, columns are visited in order; a mask is chosen for each block of columns by the
optimal-brain-surgeon saliency w^2 / [H^-1]_jj^2 (unstructured: the lowest `sparsity` share of
each 128-column block across rows; 2:4: the two lowest of every four inputs in each row), and the
error of every zeroed weight is compensated on the columns not yet visited through the inverse
Hessian of the calibration inputs, so the remaining weights re-fit the layer's outputs
||W X - W' X||. Layers run in order with the earlier ones pruned (`calibration.sequential`).

Hand-written for the same reasons as `nas.compression.gptq` (no SparseGPT that installs with torch
2.13 CPU and transformers 5.24; NNI 3.0 has none); it shares GPTQ's inverse-Hessian factor.
"""

from __future__ import annotations

import torch

from nas.compression.calibration import Stats, one_thread
from nas.compression.gptq import BLOCK, _inverse_hessian_factor


def _block_mask(w: torch.Tensor, d: torch.Tensor, pattern: str, sparsity: float) -> torch.Tensor:
    """Keep-mask for columns w [rows, n] with inverse-Hessian diagonal d [n]."""
    saliency = w.pow(2) / d.pow(2)[None, :]
    if pattern == "2:4":
        rows, n = w.shape
        blocks = saliency.reshape(rows, n // 4, 4)
        drop = blocks.topk(2, dim=-1, largest=False).indices
        return torch.ones_like(blocks, dtype=torch.bool).scatter_(-1, drop, False).reshape(rows, n)
    n_drop = int(saliency.numel() * sparsity)
    mask = torch.ones_like(saliency, dtype=torch.bool).flatten()
    if n_drop:
        mask[saliency.flatten().topk(n_drop, largest=False).indices] = False
    return mask.reshape(saliency.shape)


@torch.no_grad()
@one_thread()
def sparsegpt_prune(
    weight: torch.Tensor, stats: Stats, pattern: str, sparsity: float, *, damp: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pruned and re-fitted weight [out, in] float32, its keep-mask)."""
    rows, cols = weight.shape
    if pattern == "2:4" and cols % 4:
        raise ValueError(f"2:4 needs input sizes divisible by 4, got {cols}")
    if pattern not in ("unstructured", "2:4"):
        raise ValueError(f"unknown sparsity pattern '{pattern}'; use unstructured or 2:4")
    w = weight.detach().double().cpu().clone()
    u = _inverse_hessian_factor(stats.gram, damp)
    keep = torch.ones(rows, cols, dtype=torch.bool)
    diag = torch.diagonal(u)
    for start in range(0, cols, BLOCK):
        end = min(start + BLOCK, cols)
        if pattern == "unstructured":  # one mask for the block, chosen on its current weights
            keep[:, start:end] = _block_mask(w[:, start:end], diag[start:end], pattern, sparsity)
        err = torch.zeros(rows, end - start, dtype=torch.float64)
        for j in range(end - start):
            i = start + j
            if pattern == "2:4" and j % 4 == 0:  # each 4 inputs, chosen after the updates so far
                keep[:, i : i + 4] = _block_mask(w[:, i : i + 4], diag[i : i + 4], pattern, 0.5)
            q = torch.where(keep[:, i], w[:, i], 0.0)
            err[:, j] = (w[:, i] - q) / u[i, i]
            w[:, i] = q
            w[:, i + 1 : end] -= err[:, j : j + 1] * u[i, i + 1 : end][None, :]
        w[:, end:] -= err @ u[start:end, end:]
    return (w * keep).float(), keep
