"""Wanda pruning (Sun et al., 2023): remove the weights of smallest |W_ij| * ||X_j||.

The score weighs each weight's magnitude by the norm of the input it multiplies on calibration
tokens, so a small weight on a large-activation channel survives where magnitude pruning would
drop it. As in the reference, weights compete within each output row (50% unstructured: the half
of each row with the lowest scores go; 2:4: the two lowest of every four consecutive inputs). No
weight is updated. Hand-written: the score is one line on top of the calibration statistics that
GPTQ needs anyway (`nas.compression.calibration`), and NNI 3.0 has no activation-aware pruner.
"""

from __future__ import annotations

import torch

from nas.compression.calibration import Stats


def wanda_scores(weight: torch.Tensor, stats: Stats) -> torch.Tensor:
    """|W_ij| * ||X_j||_2 on the calibration tokens."""
    return weight.detach().abs().float().cpu() * stats.sq_norms.sqrt().float()[None, :]


def keep_mask(scores: torch.Tensor, pattern: str, sparsity: float) -> torch.Tensor:
    """Keep-mask from scores: per output row (unstructured) or per 4 inputs (2:4)."""
    rows, cols = scores.shape
    if pattern == "2:4":
        if cols % 4:
            raise ValueError(f"2:4 needs input sizes divisible by 4, got {cols}")
        blocks = scores.reshape(rows, cols // 4, 4)
        drop = blocks.topk(2, dim=-1, largest=False).indices
        mask = torch.ones_like(blocks, dtype=torch.bool).scatter_(-1, drop, False)
        return mask.reshape(rows, cols)
    if pattern != "unstructured":
        raise ValueError(f"unknown sparsity pattern '{pattern}'; use unstructured or 2:4")
    n_drop = int(cols * sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if n_drop:
        drop = scores.topk(n_drop, dim=1, largest=False).indices
        mask.scatter_(1, drop, False)
    return mask


def wanda_mask(weight: torch.Tensor, stats: Stats, pattern: str, sparsity: float) -> torch.Tensor:
    return keep_mask(wanda_scores(weight, stats), pattern, sparsity)
