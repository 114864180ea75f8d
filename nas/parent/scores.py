"""How much each layer, attention head, FFN channel and expert of a parent matters, measured
on calibration text (Minitron, Muralidharan et al. 2024: activation-based importance).

One forward pass over the calibration windows, with hooks:
- a layer: block influence (ShortGPT), mean 1 - cos(layer input, layer output) per token; the
  layers that change the residual stream least go first;
- a query head: mean L2 norm of its attention output (the input of o_proj, per head);
- an FFN channel: mean |act(gate) * up| (the input of down_proj); in MoE layers per expert, over
  the tokens routed to it;
- an expert: the routing weight it receives per token.

Activations rank by what the parent does on real text, where weight norms (NNI's L1) only see
the weights. The result is cached: a parent is scored once per study.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from nas.compression.structured import influence_hook, usage_hook
from nas.files import atomic_write

log = logging.getLogger("nas.parent")
CHUNK = 8  # calibration windows per forward pass: bounds the activations held at once
CACHE_VERSION = 1


@dataclass(frozen=True)
class Importance:
    layers: torch.Tensor  # [L] block influence
    heads: torch.Tensor  # [L, n_heads] mean L2 norm of each query head's output
    ffn: torch.Tensor  # [L, ffn] dense; [L, n_experts, ffn] MoE: mean |activation| per channel
    experts: torch.Tensor  # [L, n_experts] routing weight per token; [L, 0] dense

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reversed(self) -> Importance:
        """The scores negated: a child built from them keeps the least important units."""
        return Importance(**{name: -value for name, value in self.to_dict().items()})

    def random(self, seed: int) -> Importance:
        """Random scores of the same shapes: random selection of units at the same size, the
        baseline activation importance is measured against."""
        generator = torch.Generator().manual_seed(seed)
        return Importance(
            **{
                name: torch.rand(value.shape, generator=generator, dtype=torch.float64)
                for name, value in self.to_dict().items()
            }
        )


class _Sums:
    """Running sums of one quantity per layer, and the token counts they are over."""

    def __init__(self, n_layers: int, shape: tuple[int, ...]) -> None:
        self.total = torch.zeros(n_layers, *shape, dtype=torch.float64)
        self.count = torch.zeros(n_layers, *shape[:-1], 1, dtype=torch.float64)

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


def _head_hook(sums: _Sums, index: int, n_heads: int):
    def hook(_module, args):
        x = args[0].detach().float()
        per_head = x.reshape(-1, n_heads, x.shape[-1] // n_heads).norm(dim=-1)
        sums.total[index] += per_head.sum(0).double().cpu()
        sums.count[index] += per_head.shape[0]

    return hook


def _channel_hook(sums: _Sums, index: int):
    def hook(_module, args):
        x = args[0].detach().float().reshape(-1, args[0].shape[-1])
        sums.total[index] += x.abs().sum(0).double().cpu()
        sums.count[index] += x.shape[0]

    return hook


def _expert_channel_hook(sums: _Sums, index: int, experts: torch.nn.Module):
    """Per expert, the SwiGLU activations of the tokens routed to it, recomputed from the expert
    block's inputs (the experts are 3-D parameters, not modules a hook could see)."""

    def hook(_module, args):
        hidden, top_k_index = args[0].detach(), args[1]
        for e in range(experts.gate_up_proj.shape[0]):
            tokens = (top_k_index == e).any(-1).nonzero().flatten()
            if len(tokens) == 0:
                continue
            gate, up = torch.nn.functional.linear(hidden[tokens], experts.gate_up_proj[e]).chunk(
                2, dim=-1
            )
            h = (experts.act_fn(gate) * up).float()
            sums.total[index, e] += h.abs().sum(0).double().cpu()
            sums.count[index, e] += h.shape[0]

    return hook


def _hooks(model: torch.nn.Module, sums: dict[str, _Sums], influence, usage) -> list:
    handles = []
    n_heads = model.config.num_attention_heads
    for index, layer in enumerate(model.model.layers):
        handles.append(layer.register_forward_hook(influence_hook(influence, index)))
        attn = layer.self_attn
        handles.append(
            attn.o_proj.register_forward_pre_hook(_head_hook(sums["heads"], index, n_heads))
        )
        mlp = layer.mlp
        if hasattr(mlp, "experts"):
            handles.append(mlp.gate.register_forward_hook(usage_hook(usage, index, mlp.gate)))
            hook = _expert_channel_hook(sums["ffn"], index, mlp.experts)
            handles.append(mlp.experts.register_forward_pre_hook(hook))
        else:
            handles.append(
                mlp.down_proj.register_forward_pre_hook(_channel_hook(sums["ffn"], index))
            )
    return handles


@torch.no_grad()
def measure(model: torch.nn.Module, calibration: torch.Tensor) -> Importance:
    """Importance of every unit of `model` on `calibration` windows [n, seq] (one pass)."""
    config = model.config
    layers = model.model.layers
    n_layers, moe = len(layers), hasattr(layers[0].mlp, "experts")
    n_experts = layers[0].mlp.experts.gate_up_proj.shape[0] if moe else 0
    ffn = layers[0].mlp.experts.down_proj.shape[-1] if moe else layers[0].mlp.down_proj.in_features
    sums = {
        "heads": _Sums(n_layers, (config.num_attention_heads,)),
        "ffn": _Sums(n_layers, (n_experts, ffn) if moe else (ffn,)),
    }
    influence = torch.zeros(n_layers, dtype=torch.float64)
    usage: dict[int, torch.Tensor] = {}
    handles = _hooks(model, sums, influence, usage)
    model.eval()
    try:
        for chunk in calibration.split(CHUNK):
            model(input_ids=chunk.to(next(model.parameters()).device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    tokens = calibration.numel()
    experts = torch.zeros(n_layers, n_experts, dtype=torch.float64)
    for index, total in usage.items():
        experts[index] = total.double() / tokens
    return Importance(
        layers=influence / tokens,
        heads=sums["heads"].mean(),
        ffn=sums["ffn"].mean(),
        experts=experts,
    )


def _key(model: torch.nn.Module, calibration: torch.Tensor) -> str:
    """What decides the scores besides the weights (the caller keys the cache path by those):
    the model's shape and the calibration tokens."""
    config = json.dumps(model.config.to_diff_dict(), sort_keys=True, default=str)
    tokens = calibration.to(torch.int64).contiguous().numpy().tobytes()
    shape = json.dumps(list(calibration.shape))
    return hashlib.sha256(config.encode() + shape.encode() + tokens).hexdigest()


def _read(cache: Path, key: str) -> Importance | None:
    try:
        stored = torch.load(cache, weights_only=True)
    except Exception as err:  # a damaged or foreign file: score again and replace it
        log.warning("importance cache %s cannot be read (%s); scoring again", cache, err)
        return None
    if stored.get("version") != CACHE_VERSION or stored.get("key") != key:
        log.info("importance cache %s is for other calibration text or model; scoring again", cache)
        return None
    return Importance(**{f.name: stored[f.name] for f in fields(Importance)})


def importance(
    model: torch.nn.Module, calibration: torch.Tensor, *, cache: Path | None = None
) -> Importance:
    """`measure`, read from `cache` when it holds this model shape's scores on these tokens, and
    written there (atomically) otherwise. The weights are not hashed: key `cache` by the parent's
    fingerprint."""
    key = _key(model, calibration)
    if cache is not None and cache.is_file():
        found = _read(cache, key)
        if found is not None:
            return found
    scores = measure(model, calibration)
    if cache is not None:
        buffer = io.BytesIO()
        torch.save({"version": CACHE_VERSION, "key": key, **scores.to_dict()}, buffer)
        atomic_write(cache, buffer.getvalue(), setting="cache_dir")
    return scores
