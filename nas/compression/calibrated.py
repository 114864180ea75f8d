"""The calibration-based methods over a whole model: Wanda and SparseGPT pruning, GPTQ and AWQ
quantization, each layer after the one before (`calibration.sequential`; AWQ on float
activations)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from nas.compression.awq import awq_layer
from nas.compression.calibration import Stats, reconstruction_error, sequential
from nas.compression.gptq import quantize_matrix
from nas.compression.matrices import Matrix, block_matrices, decoder_layers
from nas.compression.prune import sparsity_masks
from nas.compression.quantize import quantize_dequantize
from nas.compression.sparsegpt import sparsegpt_prune
from nas.compression.wanda import wanda_mask

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
QUANT_METHODS = ("rtn", "gptq", "awq")


def _stats_for(matrix: Matrix, stats: dict[str, Stats]) -> Stats | None:
    return stats.get(matrix.label)


@torch.no_grad()
def prune_calibrated(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    *,
    method: str,
    pattern: str,
    sparsity: float,
    damp: float = 0.01,
) -> tuple[list[torch.Tensor], int]:
    """Prune every block matrix in place with `method` (wanda | sparsegpt); returns keep-masks
    in `block_matrices` order and how many matrices kept magnitude pruning instead, because it
    reconstructed their calibration outputs better (Wanda's per-weight score ignores how inputs
    correlate, and loses on some attention matrices of small models: the shipped matrix is never
    worse than magnitude's on the calibration tokens). A matrix no calibration token reached (an
    unused expert) is pruned by magnitude."""
    if method not in ("wanda", "sparsegpt"):
        raise ValueError(f"unknown pruning method '{method}'; use one of {PRUNE_METHODS}")
    masks: dict[str, torch.Tensor] = {}
    kept_magnitude = [0]

    def apply(_index: int, matrices: list[Matrix], stats: dict[str, Stats], _inputs) -> None:
        for matrix in matrices:
            weight = matrix.get()
            (magnitude,) = sparsity_masks([matrix], pattern, sparsity)
            magnitude = magnitude.to(weight.device)
            found = stats.get(matrix.label)
            if found is None:
                new, mask = weight * magnitude, magnitude
            elif method == "wanda":
                mask = wanda_mask(weight, found, pattern, sparsity).to(weight.device)
                new = weight * mask
            else:
                new, mask = sparsegpt_prune(weight, found, pattern, sparsity, damp=damp)
            if found is None or reconstruction_error(
                weight, weight * magnitude, found
            ) < reconstruction_error(weight, new, found):
                new, mask = weight * magnitude, magnitude
                kept_magnitude[0] += 1
            matrix.set(new)
            masks[matrix.label] = mask

    sequential(model, calibration, apply)
    return [masks[m.label] for m in block_matrices(model)], kept_magnitude[0]


def _same_input(matrices: list[Matrix], stats: dict[str, Stats]) -> list[list[Matrix]]:
    """Matrices grouped by the statistics object of their input (q/k/v, gate/up share one)."""
    groups: dict[int, list[Matrix]] = {}
    for matrix in matrices:
        groups.setdefault(id(stats.get(matrix.label, matrix)), []).append(matrix)
    return list(groups.values())


def _gptq_group(group, stats, mask_of, bits, group_size, *, act_order, damp) -> tuple[int, int]:
    """GPTQ on matrices that read one input, stacked by rows (rows are independent given H, so
    stacking only saves column loops); returns (rows that kept round-to-nearest, rows)."""
    weights = [m.get() for m in group]
    rows = sum(w.shape[0] for w in weights)
    found = stats.get(group[0].label)
    if found is None:  # no calibration token reached it: nothing to fit, round to nearest
        for matrix, w in zip(group, weights, strict=True):
            matrix.set(quantize_dequantize(w, bits=bits, group_size=group_size))
        return rows, rows
    masks = [mask_of.get(m.label) for m in group]
    mask = None
    if any(x is not None for x in masks):
        ones = [torch.ones_like(w, dtype=torch.bool) for w in weights]
        mask = torch.cat([o if x is None else x.cpu() for o, x in zip(ones, masks, strict=True)])
    stacked = torch.cat([w.float().cpu() for w in weights])
    new, kept = quantize_matrix(
        stacked, found, bits=bits, group_size=group_size, act_order=act_order, damp=damp, mask=mask
    )
    for matrix, part in zip(group, new.split([w.shape[0] for w in weights]), strict=True):
        matrix.set(part)
    return kept, rows


@torch.no_grad()
def quantize_calibrated(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    *,
    method: str,
    bits: int,
    group_size: int,
    masks: list[torch.Tensor] | None = None,
    act_order: bool = True,
    damp: float = 0.01,
) -> dict[str, Any]:
    """Quantize every block matrix in place with `method` (gptq | awq); returns what the recipe
    records (GPTQ: rows that kept round-to-nearest; AWQ: the alpha of each scale group)."""
    labels = [m.label for m in block_matrices(model)]
    mask_of = dict(zip(labels, masks, strict=True)) if masks is not None else {}
    layers = decoder_layers(model)
    counts = [0, 0]  # rows that kept round-to-nearest, rows
    alphas: dict[str, float] = {}

    def apply(index: int, matrices: list[Matrix], stats: dict[str, Stats], inputs) -> None:
        if method == "awq":
            alphas.update(
                awq_layer(
                    layers[index], index, matrices, stats, inputs, bits=bits, group_size=group_size
                )
            )
            return
        if method != "gptq":
            raise ValueError(f"unknown quantization method '{method}'; use one of {QUANT_METHODS}")
        for group in _same_input(matrices, stats):
            kept, rows = _gptq_group(
                group, stats, mask_of, bits, group_size, act_order=act_order, damp=damp
            )
            counts[0] += kept
            counts[1] += rows

    if method == "awq":
        # AWQ's own recipe (Lin et al. 2024): scales are searched on the float model's
        # activations and the weights rounded afterwards, so statistics and inputs come from an
        # unquantized copy (folding keeps its function), not from the rounded layers before.
        sequential(model, calibration, apply, observe=copy.deepcopy(model), keep_inputs=True)
        return {"alpha": alphas}
    sequential(model, calibration, apply)
    return {"rtn_rows": counts[0], "rows": counts[1]}
