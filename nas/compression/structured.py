"""Structured pruning: whole decoder layers, attention heads, FFN channels or experts leave the
model.

The result is a genuinely smaller `ArchConfig` and a freshly built `transformers` model of that
shape holding the kept weights, so the predictors, parameter counts and export all see the smaller
model. Which heads and channels go is decided by NNI's `L1NormPruner` (through
`nas.compression.nni_backend`) on one row per head or channel that joins every weight belonging
to it; NNI's own `ModelSpeedup` cannot trace `transformers` models on torch 2.13, so the surgery is
done by slicing (`nas.parent.child.sliced_state`, which the prune space's children use too).
Experts are ranked by the routing weight they receive on calibration tokens (a data-dependent
score that NNI has no pruner for). Whole layers go by block influence
(ShortGPT, Men et al. 2024): 1 - cos(layer input, layer output) averaged over calibration tokens;
the layers that change the residual stream least are dropped first.

The shapes obey `nas.shrink`'s rules (equal counts in every layer, equal GQA groups, a residual
width the head count divides); `nas.shrink.pruned_arch` gives the same shape without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from nas.arch import ArchConfig
from nas.compression import nni_backend
from nas.errors import NasError
from nas.parent.child import LayerPlan, sliced_state
from nas.quality.models import build_model
from nas.shrink import head_plan, layers_removed, pruned_arch


@dataclass(frozen=True)
class StructuredResult:
    model: torch.nn.Module
    arch: ArchConfig
    removed: dict[str, int]  # what left: heads (query heads per layer), ffn channels, experts


def _rows_to_linears(rows_per_module: list[torch.Tensor]) -> torch.nn.ModuleDict:
    """One bias-free Linear per score matrix [candidates, features] (NNI ranks its rows)."""
    linears = torch.nn.ModuleDict()
    for i, rows in enumerate(rows_per_module):
        linear = torch.nn.Linear(rows.shape[1], rows.shape[0], bias=False)
        linear.weight.data.copy_(rows.detach().float().cpu())
        linears[f"m{i}"] = linear
    return linears


def _kept_rows(rows_per_module: list[torch.Tensor], n_remove: int) -> list[torch.Tensor]:
    """Indices of the rows NNI keeps in each score matrix, sorted."""
    masks = nni_backend.channel_masks(_rows_to_linears(rows_per_module), n_remove)
    return [masks[f"m{i}"].any(dim=1).nonzero().flatten() for i in range(len(rows_per_module))]


# --- attention heads ------------------------------------------------------------------------
def _kept_heads(layer: torch.nn.Module, arch: ArchConfig, per_group: int, kv_removed: int):
    """(kept query heads, kept kv heads) of one layer, as sorted index tensors."""
    attn, hd = layer.self_attn, arch.head_dim
    group = arch.n_heads // arch.n_kv_heads
    q = attn.q_proj.weight.reshape(arch.n_heads, hd, -1).flatten(1)
    o = attn.o_proj.weight.reshape(-1, arch.n_heads, hd).transpose(0, 1).flatten(1)
    per_head = torch.cat([q, o], dim=1)  # [n_heads, features]: every weight of one query head
    if group > 1:
        groups = list(per_head.reshape(arch.n_kv_heads, group, -1))
        kept = _kept_rows(groups, per_group)
        heads = torch.cat([k + g * group for g, k in enumerate(kept)])
        return heads, torch.arange(arch.n_kv_heads)
    k = attn.k_proj.weight.reshape(arch.n_kv_heads, hd, -1).flatten(1)
    v = attn.v_proj.weight.reshape(arch.n_kv_heads, hd, -1).flatten(1)
    (kv,) = _kept_rows([torch.cat([per_head, k, v], dim=1)], kv_removed)
    return kv, kv


# --- FFN channels ---------------------------------------------------------------------------
def _kept_channels(layer: torch.nn.Module, n_remove: int, experts: torch.Tensor) -> torch.Tensor:
    """The FFN channels NNI keeps: [ffn'] in a dense layer; [experts', ffn'] in an MoE layer,
    each kept expert ranking its own channels."""
    mlp = layer.mlp
    if not hasattr(
        mlp, "experts"
    ):  # dense SwiGLU: a channel is a gate row, an up row, a down column
        rows = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight.T], 1)
        (keep,) = _kept_rows([rows], n_remove)
        return keep
    gate, up = mlp.experts.gate_up_proj.chunk(2, dim=1)  # [E, F, D] each
    down = mlp.experts.down_proj  # [E, D, F]
    scores = [torch.cat([gate[e], up[e], down[e].T], 1) for e in experts.tolist()]
    return torch.stack([k.cpu() for k in _kept_rows(scores, n_remove)])


# --- experts --------------------------------------------------------------------------------
def usage_hook(usage: dict[int, torch.Tensor], index: int, router: torch.nn.Module):
    """A forward hook on an MoE layer's router adding the routing weight each expert receives
    to `usage[index]` (shared with nas.parent's importance pass)."""
    n = router.weight.shape[0]

    def record(_module, _inputs, output):
        _, scores, chosen = output
        total = usage.setdefault(index, torch.zeros(n))
        total.index_add_(0, chosen.flatten().cpu(), scores.flatten().float().cpu())

    return record


@torch.no_grad()
def expert_usage(model: torch.nn.Module, calibration: torch.Tensor) -> dict[int, torch.Tensor]:
    """Routing weight each expert of each MoE layer receives on `calibration` token windows."""
    usage: dict[int, torch.Tensor] = {}
    hooks = [
        layer.mlp.gate.register_forward_hook(usage_hook(usage, index, layer.mlp.gate))
        for index, layer in enumerate(model.model.layers)
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")
    ]
    try:
        model.eval()
        model(input_ids=calibration.to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return usage


# --- whole layers ---------------------------------------------------------------------------
def influence_hook(scores: torch.Tensor, index: int):
    """A forward hook on a decoder layer adding sum(1 - cos(input, output)) over its tokens to
    `scores[index]` (shared with nas.parent's importance pass)."""

    def record(_module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        cos = torch.nn.functional.cosine_similarity(args[0].float(), out.float(), dim=-1)
        scores[index] += float((1 - cos).sum())

    return record


@torch.no_grad()
def block_influence(model: torch.nn.Module, calibration: torch.Tensor) -> torch.Tensor:
    """1 - mean cos(input, output) of each decoder layer over the calibration tokens."""
    layers = model.model.layers
    scores = torch.zeros(len(layers), dtype=torch.float64)
    hooks = [
        layer.register_forward_hook(influence_hook(scores, index))
        for index, layer in enumerate(layers)
    ]
    try:
        model.eval()
        model(input_ids=calibration.to(next(model.parameters()).device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return scores / calibration.numel()


def drop_layers(
    model: torch.nn.Module, arch: ArchConfig, fraction: float, calibration: torch.Tensor | None
) -> tuple[torch.nn.Module, ArchConfig, int]:
    """Remove `fraction` of the decoder layers, lowest block influence first."""
    n_remove = layers_removed(arch, fraction)
    if calibration is None:
        raise NasError("layer pruning ranks layers by block influence: pass calibration tokens")
    scores = block_influence(model, calibration)
    keep = scores.topk(arch.n_layers - n_remove).indices.sort().values.tolist()
    new = replace(arch, n_layers=len(keep))
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.layers."):
            index, rest = key.removeprefix("model.layers.").split(".", 1)
            if int(index) in keep:
                state[f"model.layers.{keep.index(int(index))}.{rest}"] = value
        else:
            state[key] = value
    smaller = build_model(new, max_positions=_positions(model))
    smaller.load_state_dict(state)
    return smaller.to(next(model.parameters()).device), new, n_remove


# --- the whole model ------------------------------------------------------------------------
@torch.no_grad()
def prune_structured(
    model: torch.nn.Module,
    arch: ArchConfig,
    *,
    heads: float = 0.0,
    ffn: float = 0.0,
    experts: float = 0.0,
    layers: float = 0.0,
    calibration: torch.Tensor | None = None,
) -> StructuredResult:
    """Remove `layers` of the decoder layers (first), then `heads` of the query heads, `ffn` of
    the FFN channels and `experts` of the experts (shares in [0, 1)); `calibration` token
    windows [batch, seq] rank layers by block influence and experts by routing weight."""
    dropped = 0
    if layers > 0:
        model, arch, dropped = drop_layers(model, arch, layers, calibration)
    # The smaller shape, as a search space works it out; below, which units make it up.
    new = pruned_arch(arch, heads=heads, ffn=ffn, experts=experts)
    n_ffn = arch.ffn_dim - new.ffn_dim
    n_exp = arch.n_experts - new.n_experts
    removed = {"heads": arch.n_heads - new.n_heads, "ffn_channels": n_ffn, "experts": n_exp,
               "layers": dropped}  # fmt: skip
    by_head = head_plan(arch, heads)[:2] if heads > 0 else None
    usage: dict[int, torch.Tensor] = {}
    if experts > 0:
        if calibration is None:
            raise NasError("expert pruning ranks experts by routing: pass calibration tokens")
        usage = expert_usage(model, calibration)
    kept_experts = arch.n_experts - n_exp
    plans = []
    for index, layer in enumerate(model.model.layers):
        plan = _layer_plan(layer, index, arch, by_head, usage.get(index), kept_experts)
        if n_ffn:  # each kept expert ranks its own channels
            plan = replace(plan, ffn=_kept_channels(layer, n_ffn, plan.experts))
        plans.append(plan)
    state = sliced_state(model.state_dict(), plans, arch)
    smaller = build_model(new, max_positions=_positions(model))
    smaller.load_state_dict(state)
    return StructuredResult(
        model=smaller.to(next(model.parameters()).device), arch=new, removed=removed
    )


def _layer_plan(
    layer: torch.nn.Module,
    index: int,
    arch: ArchConfig,
    heads: tuple[int, int] | None,
    usage: torch.Tensor | None,
    n_experts: int,
) -> LayerPlan:
    """What layer `index` keeps: heads by weight norm (`heads` = query heads removed per group,
    kv heads removed) and the `n_experts` with most routing weight (`usage`); all channels
    (`_kept_channels` ranks them)."""
    q_heads, kv_heads = torch.arange(arch.n_heads), torch.arange(arch.n_kv_heads)
    if heads is not None:
        q_heads, kv_heads = (t.cpu() for t in _kept_heads(layer, arch, *heads))
    moe = hasattr(layer.mlp, "experts")
    experts = torch.arange(arch.n_experts if moe else 0)
    if usage is not None:
        experts = usage.topk(n_experts).indices.sort().values
    full = torch.arange(arch.ffn_dim)
    ffn = full.expand(len(experts), -1).clone() if moe else full
    return LayerPlan(index, q_heads, kv_heads, ffn, experts)


def _positions(model: torch.nn.Module) -> int:
    return int(model.config.max_position_embeddings)
