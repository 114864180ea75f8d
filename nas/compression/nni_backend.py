"""The one module that imports NNI (3.0, archived upstream): replace this file to drop it.

What works on torch 2.13 (tried 2026-11-29): `LevelPruner` (magnitude masks) and `L1NormPruner`
(output-channel masks) on `nn.Linear` modules. What does not: `nni.compression.speedup.
ModelSpeedup` on a `transformers` Llama ("Tracing expected 8 arguments but got 1 concrete
arguments"), so masks are turned into a smaller model by `nas.compression.structured`; and NNI 3.0
has no N:M pattern (its block `granularity` keeps or drops whole blocks), so 2:4 uses
`torch.ao.pruning` (see `nas.compression.prune`). Both functions return {module name: bool mask}.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import torch

NAME = "nni==3.0"
_EPS = 1e-6  # NNI floors ratio x channels; nudge the ratio so the wanted count survives flooring


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNI logs every wrapped module at INFO and prints through its own handlers."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _masks(pruner_cls, linears: torch.nn.ModuleDict, config: list[dict]) -> dict[str, torch.Tensor]:
    with _quiet():
        pruner = pruner_cls(linears, config)
        _, masks = pruner.compress()
        pruner.unwrap_model()
    return {name: masks[name]["weight"].bool() for name in linears}


def magnitude_masks(linears: torch.nn.ModuleDict, sparsity: float) -> dict[str, torch.Tensor]:
    """Unstructured: in each module, zero the `sparsity` share of weights smallest in |w|."""
    from nni.compression.pruning import LevelPruner

    return _masks(LevelPruner, linears, [{"op_types": ["Linear"], "sparse_ratio": sparsity}])


def channel_masks(linears: torch.nn.ModuleDict, n_remove: int) -> dict[str, torch.Tensor]:
    """Structured: in each module, drop the `n_remove` output rows of smallest L1 norm."""
    from nni.compression.pruning import L1NormPruner

    masks: dict[str, torch.Tensor] = {}
    for name, linear in linears.items():
        rows = linear.weight.shape[0]
        if not 0 <= n_remove < rows:
            raise ValueError(f"cannot remove {n_remove} of {rows} channels")
        if n_remove == 0:
            masks[name] = torch.ones_like(linear.weight, dtype=torch.bool)
            continue
        single = torch.nn.ModuleDict({name: linear})
        ratio = n_remove / rows + _EPS
        masks.update(
            _masks(L1NormPruner, single, [{"op_types": ["Linear"], "sparse_ratio": ratio}])
        )
        kept = int(masks[name].any(dim=1).sum())
        if kept != rows - n_remove:  # NNI rounds its own way; never accept a different shape
            raise RuntimeError(f"{NAME} kept {kept} of {rows} channels, wanted {rows - n_remove}")
    return masks
