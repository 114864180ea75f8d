"""A child pruned out of a parent: the parent's own model class, fewer units, the kept weights.

The child's shape is an `ArchConfig` (the search space samples it); which units stay is decided
by the parent's `Importance`, the most important first, per layer:
- layers: the `n_layers` of highest block influence, in their original order (ShortGPT/Minitron
  depth pruning);
- attention: the `n_kv_heads` kv groups whose query heads matter most together, and within each
  the `n_heads / n_kv_heads` most important query heads, so grouped-query groups stay equal; q/k/v
  rows (and biases) and o_proj columns follow their heads, Qwen3's per-head q/k norms stay;
- FFN: the `ffn_dim` most active channels (gate/up rows, down columns); in MoE layers each kept
  expert keeps its own most active channels;
- experts: the `n_experts` with the most routing weight, with their router rows.

Head width, residual width, vocabulary and tying stay the parent's. Every tensor of the parent is
sliced or copied and the child loads them strictly, so a missed weight fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

from nas.arch import EXPERT_KEYS, ArchConfig, arch_from_hf
from nas.errors import NasError

if TYPE_CHECKING:  # nas.compression.structured imports this module, and scores imports it
    from nas.parent.scores import Importance


def model_arch(model: torch.nn.Module) -> ArchConfig:
    return arch_from_hf(model.config.to_dict())


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` largest scores, in ascending index order (ties: the lower index)."""
    order = torch.argsort(-scores.double(), stable=True)
    return order[:k].sort().values


def check_child(parent: ArchConfig, arch: ArchConfig) -> None:
    """`arch` is a sub-network of `parent`: fewer (or as many) of each unit, the rest equal."""
    group, child_group = parent.n_heads // parent.n_kv_heads, arch.n_heads // arch.n_kv_heads
    same = ("head_dim", "d_model", "vocab_size", "tie_embeddings", "moe_every")
    wrong = [name for name in same if getattr(arch, name) != getattr(parent, name)]
    counts = ("n_layers", "n_kv_heads", "ffn_dim", "n_experts", "experts_per_token")
    wrong += [name for name in counts if getattr(arch, name) > getattr(parent, name)]
    if child_group > group:
        wrong.append("n_heads per kv group")
    if (arch.n_experts > 1) != (parent.n_experts > 1):
        wrong.append("n_experts (an MoE parent keeps at least 2, a dense one stays dense)")
    if wrong:
        raise NasError(
            f"{arch} is no sub-network of the parent {parent}: {', '.join(wrong)} differ; "
            "a child keeps the parent's head and residual widths and at most its units"
        )


def child_config(model: torch.nn.Module, arch: ArchConfig) -> PretrainedConfig:
    """The parent's config, shaped as `arch`: the config `child_model` builds."""
    parent = model_arch(model)
    check_child(parent, arch)
    values = model.config.to_dict()
    values.update(
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_kv_heads,
        head_dim=arch.head_dim,  # explicit: hidden_size // heads no longer gives it
    )
    if arch.n_experts > 1:
        ffn_key = "moe_intermediate_size" if values.get("moe_intermediate_size") else ""
        values[ffn_key or "intermediate_size"] = arch.ffn_dim
        values[next(k for k in EXPERT_KEYS if values.get(k))] = arch.n_experts
        values["num_experts_per_tok"] = arch.experts_per_token
    else:
        values["intermediate_size"] = arch.ffn_dim
    kinds = values.get("layer_types")
    if kinds:
        if len(set(kinds)) > 1:
            raise NasError(
                "the parent mixes attention kinds per layer (layer_types); pruning it is not "
                "supported"
            )
        values["layer_types"] = kinds[: arch.n_layers]
    try:
        config = type(model.config).from_dict(values)
    except Exception as err:  # the config class's own validation (e.g. Llama's head divisibility)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
        name = type(model.config).__name__
        raise NasError(f"{name} refuses the child {arch}: {reason}") from None
    return config


@dataclass(frozen=True)
class LayerPlan:
    """What one kept layer keeps (indices into the parent layer's units)."""

    source: int
    heads: torch.Tensor
    kv_heads: torch.Tensor
    ffn: torch.Tensor  # [ffn'] dense; [experts', ffn'] MoE (per kept expert)
    experts: torch.Tensor


def plan(imp: Importance, parent: ArchConfig, arch: ArchConfig) -> list[LayerPlan]:
    """Which units each kept layer keeps, most important first."""
    group, child_group = parent.n_heads // parent.n_kv_heads, arch.n_heads // arch.n_kv_heads
    out = []
    for source in top(imp.layers, arch.n_layers).tolist():
        heads = imp.heads[source].reshape(parent.n_kv_heads, group)
        kv = top(heads.sum(1), arch.n_kv_heads)
        q = torch.cat([g * group + top(heads[g], child_group) for g in kv.tolist()])
        if parent.n_experts > 1:
            experts = top(imp.experts[source], arch.n_experts)
            ffn = torch.stack([top(imp.ffn[source, e], arch.ffn_dim) for e in experts.tolist()])
        else:
            experts = torch.arange(0)
            ffn = top(imp.ffn[source], arch.ffn_dim)
        out.append(LayerPlan(source, q, kv, ffn, experts))
    return out


def _rows(tensor: torch.Tensor, keep: torch.Tensor, size: int) -> torch.Tensor:
    """Rows of `tensor` in blocks of `size` (one per head), the blocks `keep` names."""
    blocks = tensor.reshape(-1, size, *tensor.shape[1:])
    return blocks[keep].reshape(len(keep) * size, *tensor.shape[1:])


def _layer_state(
    state: dict[str, torch.Tensor], layer: LayerPlan, parent: ArchConfig
) -> dict[str, torch.Tensor]:
    """The kept layer's tensors, named as in the child (without the `model.layers.i.` prefix)."""
    hd = parent.head_dim
    out = {}
    for name, value in state.items():
        if name.startswith("self_attn.q_proj."):
            value = _rows(value, layer.heads, hd)
        elif name.startswith(("self_attn.k_proj.", "self_attn.v_proj.")):
            value = _rows(value, layer.kv_heads, hd)
        elif name == "self_attn.o_proj.weight":
            value = value.reshape(value.shape[0], parent.n_heads, hd)[:, layer.heads].flatten(1)
        elif name.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
            value = value[layer.ffn]
        elif name == "mlp.down_proj.weight":
            value = value[:, layer.ffn]
        elif name == "mlp.gate.weight":  # the router: one row per expert
            value = value[layer.experts]
        elif name == "mlp.experts.gate_up_proj":  # [E, 2F, D]: gate rows, then up rows
            gate, up = value[layer.experts].chunk(2, dim=1)
            index = layer.ffn.to(value.device).unsqueeze(-1).expand(-1, -1, value.shape[-1])
            value = torch.cat([gate.gather(1, index), up.gather(1, index)], dim=1)
        elif name == "mlp.experts.down_proj":  # [E, D, F]
            down = value[layer.experts]
            index = layer.ffn.to(value.device).unsqueeze(1).expand(-1, down.shape[1], -1)
            value = down.gather(2, index)
        out[name] = value.clone()
    return out


def sliced_state(
    state: dict[str, torch.Tensor], layers: list[LayerPlan], parent: ArchConfig
) -> dict[str, torch.Tensor]:
    """A parent's state dict cut down to `layers` (renumbered in order, each keeping the units
    its plan names); embeddings, final norm and LM head as they are. Shared with
    nas.compression.structured, which plans by weight norms instead of activations."""
    out = {k: v for k, v in state.items() if not k.startswith("model.layers.")}
    for index, layer in enumerate(layers):
        prefix = f"model.layers.{layer.source}."
        mine = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        for name, value in _layer_state(mine, layer, parent).items():
            out[f"model.layers.{index}.{name}"] = value
    return out


@torch.no_grad()
def child_model(model: torch.nn.Module, imp: Importance, arch: ArchConfig) -> torch.nn.Module:
    """A new model of the parent's class shaped as `arch`, holding the parent's most important
    kept weights (fp32, eval, CPU; deterministic). `arch` equal to the parent's shape gives the
    parent's logits exactly."""
    parent = model_arch(model)
    config = child_config(model, arch)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    child_state = sliced_state(state, plan(imp, parent, arch), parent)
    child = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation=model.config._attn_implementation
    )
    child.load_state_dict(child_state, strict=True)
    return child.float().eval()
