"""Weight sparsity inside the decoder blocks: unstructured magnitude pruning and 2:4.

Unstructured: NNI's `LevelPruner` (behind `nas.compression.nni_backend`), per matrix. 2:4: in
every run of 4 consecutive input weights the 2 of largest magnitude are kept (the layout sparse
tensor cores run); NNI 3.0 has no N:M pattern, so torch's own `torch.ao.pruning`
`WeightNormSparsifier` makes these masks. Masks are applied by zeroing: a dense model with zeros
is what a device without sparse kernels runs, and the predictors only credit sparsity where the
hardware profile declares kernels or storage for its pattern.
"""

from __future__ import annotations

import torch

from nas.compression import nni_backend
from nas.compression.matrices import Matrix, as_linears, iter_pairs

BACKENDS = {"unstructured": nni_backend.NAME, "2:4": "torch.ao.pruning.WeightNormSparsifier"}


def two_four_masks(linears: torch.nn.ModuleDict) -> dict[str, torch.Tensor]:
    """2:4 masks along the input dimension (every matrix's input size must divide by 4)."""
    from torch.ao.pruning import WeightNormSparsifier

    for name, linear in linears.items():
        if linear.weight.shape[1] % 4:
            raise ValueError(
                f"2:4 needs input sizes divisible by 4; {name} has {linear.in_features}"
            )
    sparsifier = WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2
    )
    sparsifier.prepare(linears, [{"tensor_fqn": f"{name}.weight"} for name in linears])
    sparsifier.step()
    masks = {
        name: linear.parametrizations.weight[0].mask.detach().bool().clone()
        for name, linear in linears.items()
    }
    sparsifier.squash_mask()
    return masks


def sparsity_masks(matrices: list[Matrix], pattern: str, sparsity: float) -> list[torch.Tensor]:
    """One keep-mask per matrix for `pattern` ("unstructured" or "2:4")."""
    linears = as_linears(matrices)
    if pattern == "unstructured":
        masks = nni_backend.magnitude_masks(linears, sparsity)
    elif pattern == "2:4":
        if sparsity != 0.5:
            raise ValueError(f"2:4 zeroes exactly half of the weights, not {sparsity}")
        masks = two_four_masks(linears)
    else:
        raise ValueError(f"unknown sparsity pattern '{pattern}'; use unstructured or 2:4")
    return [mask for _, mask in iter_pairs(matrices, masks)]


@torch.no_grad()
def apply_masks(matrices: list[Matrix], masks: list[torch.Tensor]) -> None:
    """Zero the masked-out weights in place."""
    for matrix, mask in zip(matrices, masks, strict=True):
        matrix.set(matrix.get() * mask.to(matrix.get().device, matrix.get().dtype))


@torch.no_grad()
def prune_matrices(matrices: list[Matrix], pattern: str, sparsity: float) -> list[torch.Tensor]:
    """Prune in place; returns the masks (a recovery fine-tune keeps them applied)."""
    masks = sparsity_masks(matrices, pattern, sparsity)
    apply_masks(matrices, masks)
    return masks


def measured_sparsity(matrices: list[Matrix]) -> float:
    """Share of exact zeros over all matrices."""
    zeros = sum(int((m.get() == 0).sum()) for m in matrices)
    return zeros / max(1, sum(m.numel for m in matrices))
