"""Train this shape, then prune to that one (`Shrink`), and how structured pruning changes a
shape, worked out without a model or torch (search spaces sample pruned shapes with it;
`nas.compression.structured` prunes real models by it).

Rules the shapes obey: every layer keeps the same counts (one `ArchConfig` describes all layers);
grouped-query attention keeps equal groups (with groups of g > 1 query heads, the same number of
query heads leaves each group; with g = 1, whole query/key/value heads leave together);
`transformers` requires the residual width to be a multiple of the head count; FFN widths that
are multiples of 8 stay so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from nas.arch import ArchConfig
from nas.errors import NasError

RECOVERIES = ("none", "finetune", "distill")  # after structured pruning: nothing, LM loss, KD


@dataclass(frozen=True)
class StructuredSpec:
    """Shares of heads, FFN channels, experts and layers to remove."""

    heads: float = 0.0
    ffn: float = 0.0
    experts: float = 0.0
    layers: float = 0.0  # whole decoder layers, lowest block influence first

    @property
    def active(self) -> bool:
        return self.heads > 0 or self.ffn > 0 or self.experts > 0 or self.layers > 0


@dataclass(frozen=True)
class Shrink:
    """Train this shape, then prune to that one: the shape trained, the shares of its heads,
    FFN channels, experts and layers removed afterwards (`nas.compression.structured`), and the
    recovery run on the pruned model (none, a fine-tune, or distillation from the unpruned
    model)."""

    trained: ArchConfig
    heads: float = 0.0
    ffn: float = 0.0
    experts: float = 0.0
    layers: float = 0.0
    recovery: str = "none"

    def __post_init__(self) -> None:
        shares = (self.heads, self.ffn, self.experts, self.layers)
        if not all(0.0 <= s < 1.0 for s in shares) or not any(shares):
            raise ValueError(f"shrink shares must lie in [0, 1) and one must be > 0, got {shares}")
        if self.recovery not in RECOVERIES:
            raise ValueError(f"recovery must be one of {RECOVERIES}")

    @property
    def spec(self) -> StructuredSpec:
        """What `nas.compression.compress` removes from the trained model."""
        return StructuredSpec(self.heads, self.ffn, self.experts, self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trained": self.trained.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Shrink:
        return cls(**{**data, "trained": ArchConfig.from_dict(data["trained"])})


def head_plan(arch: ArchConfig, fraction: float) -> tuple[int, int, int]:
    """(query heads removed per kv group, kv heads removed, new n_heads) for `fraction`."""
    group = arch.n_heads // arch.n_kv_heads
    if group > 1:
        per_group = round(fraction * group)
        new_heads, kv_removed = arch.n_heads - per_group * arch.n_kv_heads, 0
    else:
        per_group, kv_removed = 0, round(fraction * arch.n_kv_heads)
        new_heads = arch.n_heads - kv_removed
    if new_heads == arch.n_heads or new_heads < 1 or (group > 1 and per_group >= group):
        raise NasError(
            f"pruning {fraction:.0%} of {arch.n_heads} heads ({arch.n_kv_heads} kv) removes "
            f"{arch.n_heads - new_heads}; pick a fraction that removes at least one and keeps one "
            "per kv group"
        )
    if arch.d_model % new_heads:
        raise NasError(
            f"{new_heads} heads do not divide the residual width {arch.d_model} (transformers "
            f"requires it); pick a head fraction that leaves a divisor of {arch.d_model}"
        )
    return per_group, kv_removed, new_heads


def layers_removed(arch: ArchConfig, fraction: float) -> int:
    n_remove = round(fraction * arch.n_layers)
    if not 0 < n_remove < arch.n_layers:
        raise NasError(
            f"pruning {fraction:.0%} of {arch.n_layers} layers removes {n_remove}; pick a "
            "fraction that removes at least one and keeps one"
        )
    if arch.is_moe and arch.moe_every > 1:
        raise NasError(
            f"layer pruning needs every layer alike; this model has MoE every {arch.moe_every} "
            "layers (dropping some would move the MoE layers)"
        )
    return n_remove


def ffn_removed(arch: ArchConfig, fraction: float) -> int:
    """FFN channels removed: at least `fraction`, keeping a multiple of 8 where the width is one
    (the multiple the `slm` space's widths keep, which 2:4 sparsity and kernels rely on)."""
    width = arch.ffn_dim
    kept = width - round(fraction * width)
    if width % 8 == 0:
        kept = int((1.0 - fraction) * width) // 8 * 8
    if not 0 < kept < width:
        raise NasError(
            f"pruning {fraction:.0%} of {width} FFN channels keeps {kept}; pick a fraction that "
            "removes some and keeps some"
        )
    return width - kept


def experts_removed(arch: ArchConfig, fraction: float) -> int:
    n_exp = round(fraction * arch.n_experts)
    if not arch.is_moe or n_exp < 1 or arch.n_experts - n_exp < max(2, arch.experts_per_token):
        raise NasError(
            f"pruning {fraction:.0%} of {arch.n_experts} experts removes {n_exp}, or leaves too "
            f"few for top-{arch.experts_per_token} routing; pick another fraction"
        )
    return n_exp


def pruned_arch(
    arch: ArchConfig,
    *,
    heads: float = 0.0,
    ffn: float = 0.0,
    experts: float = 0.0,
    layers: float = 0.0,
) -> ArchConfig:
    """The shape `prune_structured` leaves, worked out without a model (a search space samples
    it); a `NasError` where a share cannot apply to `arch`."""
    if layers > 0:
        arch = replace(arch, n_layers=arch.n_layers - layers_removed(arch, layers))
    new = arch
    if heads > 0:
        _, kv_removed, new_heads = head_plan(arch, heads)
        new = replace(
            new,
            n_heads=new_heads,
            n_kv_heads=arch.n_kv_heads - kv_removed,
            hidden_size=arch.d_model,
        )
    if ffn > 0:
        new = replace(new, ffn_dim=arch.ffn_dim - ffn_removed(arch, ffn))
    if experts > 0:
        new = replace(new, n_experts=arch.n_experts - experts_removed(arch, experts))
    return new
