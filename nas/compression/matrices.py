"""The weight matrices that compression touches: every matrix inside the decoder blocks.

Convention shared with `predictors.footprint` and `ArchConfig.matmul_params`: the blocks' linear
layers (attention q/k/v/o, SwiGLU gate/up/down, each expert of a MoE layer, the router) are
compressed; embeddings, the LM head and norms stay in float. Qwen3-MoE keeps its experts as 3-D
parameters ([experts, out, in]), so one parameter can hold several matrices; a `Matrix` names one
of them and reads and writes it as an ordinary [out, in] weight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Matrix:
    """One [out, in] weight matrix: a whole 2-D parameter, or expert `expert` of a 3-D one."""

    name: str  # parameter name inside the model, e.g. "model.layers.0.mlp.experts.down_proj"
    param: torch.nn.Parameter
    expert: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.expert is None else f"{self.name}[{self.expert}]"

    def get(self) -> torch.Tensor:
        return self.param.data if self.expert is None else self.param.data[self.expert]

    def set(self, value: torch.Tensor) -> None:
        target = self.get()
        target.copy_(value.to(dtype=target.dtype, device=target.device))

    @property
    def numel(self) -> int:
        return self.get().numel()


def block_matrices(model: torch.nn.Module) -> list[Matrix]:
    """Every weight matrix of the decoder blocks, in parameter order (norms are 1-D: skipped)."""
    layers = decoder_layers(model)
    found: list[Matrix] = []
    for index, layer in enumerate(layers):
        for local, param in layer.named_parameters():
            name = f"model.layers.{index}.{local}"
            if param.dim() == 2:
                found.append(Matrix(name, param))
            elif param.dim() == 3:
                found.extend(Matrix(name, param, e) for e in range(param.shape[0]))
    return found


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no model.layers: not a decoder-only LM")
    return layers


def as_linears(matrices: list[Matrix]) -> torch.nn.ModuleDict:
    """Copies of `matrices` as bias-free `nn.Linear` modules, so that pruning libraries that only
    understand Linear layers (NNI, torch.ao.pruning) can score every matrix, experts included."""
    linears = torch.nn.ModuleDict()
    for i, matrix in enumerate(matrices):
        weight = matrix.get().detach().float().cpu()
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data.copy_(weight)
        linears[f"m{i}"] = linear
    return linears


def iter_pairs(
    matrices: list[Matrix], masks: dict[str, torch.Tensor]
) -> Iterator[tuple[Matrix, torch.Tensor]]:
    """(matrix, mask) for masks keyed like `as_linears` names them (m0, m1, ...)."""
    for i, matrix in enumerate(matrices):
        yield matrix, masks[f"m{i}"]
