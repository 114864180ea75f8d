"""AWQ-style weight quantization (Lin et al., 2023): activation-aware per-input-channel scales,
folded into the model, then round-to-nearest on ONNX Runtime's grid.

Input channels that carry large activations matter most for the output, so their weights are
scaled up by s_j before rounding (relatively finer steps) and their inputs scaled down by 1 / s_j.
For each group of matrices that read the same input, s = mean|x|^alpha (normalised), with alpha
searched on a grid for the smallest error of the decoder layer's output on its calibration inputs
with that group rounded (as the reference searches on the attention / MLP block's output; the
error of one linear alone ignores softmax and gating). alpha = 0 is plain round-to-nearest, so
each group's choice is never worse than round-to-nearest on that objective.

The 1 / s is folded into what produces the input, so the shipped model is a plain `transformers`
model with no extra operation and the scored weights are exactly the exported ones:
- q/k/v read the input RMSNorm: its weight is divided by s;
- o_proj reads attention outputs: v_proj's rows are divided by s (with grouped-query attention
  one s per kv channel, shared by the query heads of its group);
- gate/up (dense), or every expert's gate_up and the router (MoE), read the post-attention
  RMSNorm: its weight is divided by s;
- down_proj reads act(gate) * up: up's rows (per expert for MoE) are divided by s.
Layers run in order with the earlier ones quantized (`calibration.sequential`).

Why hand-written (checked 2026-12-01): autoawq 0.2.9 is archived upstream and targets CUDA (or
IPEX) kernels; torchao 0.18's `prototype.awq` keeps the scale as a run-time multiply on the
activations (`act_pre_scale`) and quantizes to its own grid (Int4WeightOnlyConfig, asymmetric), so
its weights are neither a plain `transformers` model nor ONNX Runtime's MatMulNBits weights;
llmcompressor 0.14 pins transformers <= 5.17 (we run 5.24).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from nas.compression.calibration import Stats, one_thread
from nas.compression.grid import fake_quantize
from nas.compression.matrices import Matrix
from nas.compression.quantize import quantize_matrices

ALPHAS = tuple(i / 20 for i in range(20))  # the AWQ reference's grid: 0, 0.05, ..., 0.95


@dataclass
class Group:
    """Matrices that read one input, and the tensors that produce it (they take the 1 / s)."""

    name: str
    matrices: list[Matrix]
    stats: list[Stats | None]  # per matrix (None: an expert no calibration token reached)
    activations: Stats  # the whole input, for mean |x|
    producers: list[tuple[torch.Tensor, slice | None]]  # (tensor, rows) divided by s
    heads: tuple[int, int, int] | None = None  # (kv heads, queries per kv, head_dim) for o_proj
    alpha: float = field(default=0.0, init=False)

    def producer_scale(self, s: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            return s
        kv, per_kv, head_dim = self.heads
        return s.reshape(kv, per_kv, head_dim)[:, 0].reshape(-1)


def _candidate(group: Group, alpha: float) -> torch.Tensor:
    mean_abs = group.activations.mean_abs.float()
    if group.heads is not None:  # one s per kv channel, shared by its query heads
        kv, per_kv, head_dim = group.heads
        shared = mean_abs.reshape(kv, per_kv, head_dim).mean(1, keepdim=True)
        mean_abs = shared.expand(kv, per_kv, head_dim).reshape(-1)
    s = mean_abs.pow(alpha).clamp_min(1e-4)
    return s / (s.max() * s.min()).sqrt()


def group_error(group: Group, s: torch.Tensor, *, bits: int, group_size: int) -> float:
    """||W X - Q(W s)(X / s)||^2 summed over the group's matrices, from the Gram matrices (the
    grid in torch, `grid.fake_quantize`: ONNX Runtime's bit for bit, and vectorised)."""
    total = 0.0
    for matrix, stats in zip(group.matrices, group.stats, strict=True):
        if stats is None:
            continue
        w = matrix.get().float().cpu()
        delta = w - fake_quantize(w * s, bits=bits, group_size=group_size) / s
        total += float(((delta @ stats.gram.float()) * delta).sum())
    return total


class LayerObjective:
    """The decoder layer's output error on its calibration inputs when one group's weights are
    replaced by Q(W s) / s (what folding 1 / s into the producer computes), the rest float."""

    def __init__(self, layer: torch.nn.Module, inputs: list[tuple[tuple, dict]]) -> None:
        self.layer, self.inputs = layer, inputs
        self.reference = [self._run(args, kwargs) for args, kwargs in inputs]

    def _run(self, args: tuple, kwargs: dict) -> torch.Tensor:
        out = self.layer(*args, **kwargs)
        return (out[0] if isinstance(out, tuple) else out).float()

    @torch.no_grad()
    def error(self) -> float:
        """The layer's output error as its weights are now."""
        return sum(
            float((self._run(args, kwargs) - ref).pow(2).sum())
            for (args, kwargs), ref in zip(self.inputs, self.reference, strict=True)
        )

    @torch.no_grad()
    def __call__(self, group: Group, s: torch.Tensor, *, bits: int, group_size: int) -> float:
        originals = [m.get().clone() for m in group.matrices]
        try:
            for matrix, w in zip(group.matrices, originals, strict=True):
                scale = s.to(w.device, torch.float32)
                matrix.set(fake_quantize(w * scale, bits=bits, group_size=group_size) / scale)
            return self.error()
        finally:
            for matrix, w in zip(group.matrices, originals, strict=True):
                matrix.set(w)


@one_thread()
def search_scale(
    group: Group, *, bits: int, group_size: int, objective: Callable | None = None
) -> torch.Tensor:
    """s per input channel minimising `objective` (default: the group's own output error,
    `group_error`); sets `group.alpha`."""
    objective = objective or group_error
    best, best_error = torch.ones_like(group.activations.mean_abs, dtype=torch.float32), None
    for alpha in ALPHAS:
        s = torch.ones_like(best) if alpha == 0 else _candidate(group, alpha)
        error = objective(group, s, bits=bits, group_size=group_size)
        if best_error is None or error < best_error:
            best, best_error, group.alpha = s, error, alpha
    return best


@torch.no_grad()
def fold(group: Group, s: torch.Tensor) -> None:
    """Multiply the group's input columns by s and divide its producers' outputs by s: the float
    model computes the same function (up to rounding)."""
    for matrix in group.matrices:
        w = matrix.get()
        matrix.set(w * s.to(w.device, w.dtype))
    producer = group.producer_scale(s)
    for tensor, rows in group.producers:
        target = tensor if rows is None else tensor[rows]
        shape = (-1,) if target.dim() == 1 else (-1, 1)
        target.div_(producer.to(target.device, target.dtype).reshape(shape))


def _by_label(matrices: list[Matrix]) -> dict[str, Matrix]:
    return {m.label: m for m in matrices}


def layer_groups(
    layer: torch.nn.Module, index: int, matrices: list[Matrix], stats: dict[str, Stats]
) -> list[Group]:
    """The scale groups of one decoder layer (Llama or Qwen3-MoE)."""
    p = f"model.layers.{index}."
    by = _by_label(matrices)

    def make(name, labels, act, producers, heads=None):
        labels = [p + x for x in labels]
        return Group(
            name, [by[x] for x in labels], [stats.get(x) for x in labels], act, producers, heads
        )

    attn = layer.self_attn
    head_dim = attn.head_dim
    kv = attn.v_proj.weight.shape[0] // head_dim
    per_kv = attn.o_proj.weight.shape[1] // head_dim // kv
    qkv = [f"self_attn.{n}_proj.weight" for n in "qkv"]
    norm_in = layer.input_layernorm.weight.data
    groups = [
        make("attention input", qkv, stats[p + qkv[0]], [(norm_in, None)]),
        make(
            "attention output",
            ["self_attn.o_proj.weight"],
            stats[p + "self_attn.o_proj.weight"],
            [(attn.v_proj.weight.data, None)],
            (kv, per_kv, head_dim),
        ),
    ]
    mlp, norm = layer.mlp, layer.post_attention_layernorm.weight.data
    experts = getattr(mlp, "experts", None)
    if experts is None:
        groups.append(
            make(
                "mlp input",
                ["mlp.gate_proj.weight", "mlp.up_proj.weight"],
                stats[p + "mlp.gate_proj.weight"],
                [(norm, None)],
            )
        )
        groups.append(
            make(
                "mlp output",
                ["mlp.down_proj.weight"],
                stats[p + "mlp.down_proj.weight"],
                [(mlp.up_proj.weight.data, None)],
            )
        )
        return groups
    n, ffn = experts.gate_up_proj.shape[0], experts.down_proj.shape[2]
    gate_up = [f"mlp.experts.gate_up_proj[{e}]" for e in range(n)]
    groups.append(
        make(
            "experts input",
            [*gate_up, "mlp.gate.weight"],
            stats[p + "mlp.gate.weight"],
            [(norm, None)],
        )
    )
    for e in range(n):
        down = p + f"mlp.experts.down_proj[{e}]"
        if down in stats:  # an expert no calibration token reached keeps s = 1
            groups.append(
                make(
                    f"expert {e} output",
                    [f"mlp.experts.down_proj[{e}]"],
                    stats[down],
                    [(experts.gate_up_proj.data[e], slice(ffn, 2 * ffn))],
                )
            )
    return groups


@torch.no_grad()
def awq_layer(
    layer: torch.nn.Module,
    index: int,
    matrices: list[Matrix],
    stats: dict[str, Stats],
    inputs: list[tuple[tuple, dict]],
    *,
    bits: int,
    group_size: int,
) -> dict[str, float]:
    """Search every group's scale (on the layer's output for its `inputs`; on each group's own
    output without them), fold them all, then round the layer to nearest; returns the alpha
    chosen per group."""
    groups = layer_groups(layer, index, matrices, stats)
    objective = LayerObjective(layer, inputs) if inputs else None
    scales = [
        search_scale(g, bits=bits, group_size=group_size, objective=objective) for g in groups
    ]
    before = {k: v.clone() for k, v in layer.state_dict().items()} if objective else None
    for group, s in zip(groups, scales, strict=True):
        fold(group, s)
    quantize_matrices(matrices, bits=bits, group_size=group_size)
    if objective is not None and before is not None:
        # Each group's scale was searched with the others in float: together they can fit the
        # layer's output worse than plain rounding does. Keep round-to-nearest then.
        chosen = {k: v.clone() for k, v in layer.state_dict().items()}
        awq_error = objective.error()
        layer.load_state_dict(before)
        quantize_matrices(matrices, bits=bits, group_size=group_size)
        if objective.error() >= awq_error:
            layer.load_state_dict(chosen)
        else:
            for g in groups:
                g.alpha = 0.0
    return {f"{index}: {g.name}": g.alpha for g in groups}
