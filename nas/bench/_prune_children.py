"""The prune bench's children: every shape the prune space of a parent can sample, through the
space's own `suggest`, and an even spread of them over sizes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig
from nas.bench._runs import describe
from nas.config.compose import load_settings


def prune_space(overrides: list[str], directory: Path, vocab: int) -> Any:
    from nas.search.run import build_space

    mine = [o for o in overrides if not o.lstrip("+~").startswith("search_space")]
    cfg = load_settings([*mine, "search_space=prune", f"search_space.parent={directory}"])
    return build_space(cfg, vocab)


def child_grid(space: Any) -> list[ArchConfig]:
    """Every distinct child shape the prune space can sample (the parent's own shape left out),
    through the space's own `suggest`, smallest first (active parameters)."""
    from optuna.trial import FixedTrial

    from search_spaces.prune import HEADS_DIVIDE_HIDDEN, kept

    parent = space.parent_arch
    shapes: dict[str, ArchConfig] = {}
    experts = space.n_experts if parent.n_experts > 1 else [parent.n_experts]
    axes = itertools.product(
        space.n_layers, space.n_kv_heads, space.heads_per_group, space.ffn_dim, experts
    )
    for layers, kv, group, ffn, n_exp in axes:
        if space.family in HEADS_DIVIDE_HIDDEN and parent.d_model % (kv * group):
            continue  # the family's config refuses the head count (as the space's own rule)
        top_ks = {min(n_exp, kept(s, parent.experts_per_token)) for s in space.top_k_kept}
        for top_k in sorted(top_ks) if parent.n_experts > 1 else [1]:
            params = {
                "n_layers": layers,
                "n_kv_heads": kv,
                f"heads_per_group|n_kv_heads={kv}": group,
                "ffn_dim": ffn,
                "n_experts": n_exp,
                f"experts_per_token|n_experts={n_exp}": top_k,
                "weight_bits": 16,
                "sparsity": "none",
            }
            arch = space.suggest(FixedTrial(params)).arch
            if arch != parent:
                shapes[json.dumps(arch.to_dict(), sort_keys=True)] = arch
    return sorted(shapes.values(), key=lambda a: (a.active_params, describe(a)))


def spread(items: list[Any], count: int) -> list[Any]:
    """`count` of `items` at even steps through the list, both ends included."""
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]
