"""The three ways `nas.train` trains and compresses a model, one function each.

- `plain`: train in float, then apply the whole recipe (as the trial did);
- `qat` (`qat=true`): apply the recipe's pruning, train with the block matrices fake-quantized on
  ONNX Runtime's grid (`nas.compression.qat`, pruned weights held at zero), convert: the weights
  the last step computed with are the shipped ones, and the recipe's round-to-nearest quantizer
  returns them unchanged (checked here, bit for bit);
- `lora` (`lora=true`): apply the recipe's pruning and quantization, train LoRA adapters on the
  frozen compressed weights, merge them, zero the pruned weights again and quantize once more,
  so that what ships is on the runtime's grid.

`teacher=` works in all three: it changes the loss (`fit`), not the flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nas.compression.checkpoint import apply_recipe, runtime_numerics
from nas.compression.matrices import block_matrices
from nas.compression.qat import attach, convert
from nas.config.schema import ProxySettings
from nas.quality.training import ProxyData, bits_per_byte
from nas.train import recipes
from nas.train.args import TrainSettings
from nas.train.fit import Windows, fit


@dataclass
class Run:
    """What every flow reads: the data, how to score, the settings, where, the recipe."""

    data: ProxyData
    dataset: Windows
    scoring: ProxySettings
    settings: TrainSettings
    device: torch.device
    recipe_file: dict[str, Any] | None
    teachers: list[torch.nn.Module] = field(default_factory=list)

    def train(self, model: torch.nn.Module) -> list[tuple[int, float]]:
        losses = fit(model, self.dataset, self.settings, self.device, self.teachers)
        model.to("cpu").float()
        return losses

    def bpb(self, model: torch.nn.Module) -> float:
        return bits_per_byte(model, self.data, self.scoring)

    def bpb_as_run(self, model: torch.nn.Module, applied: dict[str, Any] | None) -> float:
        """`bpb` of a model compressed as `applied` says, with the activations rounded as its
        runtime rounds them: the numerics the search scored the trial in."""
        with runtime_numerics(model, applied or {}):
            return self.bpb(model)

    def apply(self, model: torch.nn.Module, recipe_file: dict[str, Any] | None):
        return apply_recipe(
            model, recipe_file, data=self.data, proxy=self.scoring, seed=self.settings.seed
        )


@dataclass
class Trained:
    model: torch.nn.Module
    losses: list[tuple[int, float]]
    bpb: float  # held-out bits per byte of the trained weights before the final compression
    # ... and after it, with activations rounded as the runtime does (None: nothing compressed)
    bpb_compressed: float | None
    compression: dict[str, Any]  # the applied report; its "training" says how QAT / LoRA ran


def plain(model: torch.nn.Module, run: Run) -> Trained:
    losses = run.train(model)
    bpb = run.bpb(model)
    if run.settings.compress:
        model, applied = run.apply(model, run.recipe_file)
    else:
        applied = {"applied": False, "reason": "compress=false"}
    bpb_compressed = run.bpb_as_run(model, applied) if applied["applied"] else None
    return Trained(model, losses, bpb, bpb_compressed, applied)


def qat(model: torch.nn.Module, run: Run) -> Trained:
    """Prune as the recipe says, train fake-quantized, convert; `bpb` is the converted model's."""
    recipe_file = run.recipe_file
    assert recipe_file is not None and recipes.quantizes(recipe_file)  # parse_args checked
    before = None
    if recipes.prunes(recipe_file):
        model, before = run.apply(model, recipes.without_quantization(recipe_file))
    comp = recipe_file["compression"]
    bits, group_size = int(comp["weight_bits"]), int(comp["group_size"])
    pruned = bool(before and before["applied"])
    attached = attach(model, bits=bits, group_size=group_size, keep_zeros=pruned)
    losses = run.train(model)
    convert(attached)
    converted = [m.get().clone() for m in block_matrices(model)]
    # The recipe's quantizer (round-to-nearest on the same grid) must ship exactly these weights.
    model, after = run.apply(model, recipes.quantization_only(recipe_file, method="rtn"))
    if not all(
        torch.equal(a, m.get()) for a, m in zip(converted, block_matrices(model), strict=True)
    ):
        raise RuntimeError("QAT's converted weights are not a fixed point of the quantizer")
    step = after["recipe"]["quantization"]
    step.update(method="qat", backend=recipes.QAT_BACKEND, replaces=comp.get("quant_method"))
    after["summary"] = after["summary"].replace(" rtn", " qat")
    training = {"qat": {"bits": bits, "group_size": group_size, "keep_zeros": pruned}}
    bpb = run.bpb_as_run(model, after)
    return Trained(model, losses, bpb, bpb, recipes.combined(before, after, training))


def lora(model: torch.nn.Module, run: Run) -> Trained:
    """Compress, train LoRA adapters on the frozen compressed weights, merge, compress again."""
    from nas.train.switches import keep_zeros, merged, with_lora

    settings = run.settings
    before, masks, quantize = _lora_base(model, run)
    model = before.pop("model")
    start = run.bpb_as_run(model, before.pop("quantized"))  # the model the adapters start from
    adapted = with_lora(model, rank=settings.lora_rank, alpha=settings.lora_alpha)
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    losses = run.train(adapted)
    model = merged(adapted)
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise RuntimeError("LoRA adapters are left in the model after merging")
    keep_zeros(model, masks)
    bpb = run.bpb(model)
    training = {
        "lora": {
            "rank": settings.lora_rank,
            "alpha": settings.lora_alpha,
            "targets": "attention and MLP projections (routed experts stay frozen)",
            "trainable_params": trainable,
            "merged": True,
        },
        "bpb_before_training": start,
    }
    if quantize is None:
        applied = {**before, "training": training}
        return Trained(model, losses, bpb, bpb if before["applied"] else None, applied)
    model, after = run.apply(model, quantize)
    compressed = run.bpb_as_run(model, after)
    return Trained(model, losses, bpb, compressed, recipes.combined(before, after, training))


def _lora_base(model: torch.nn.Module, run: Run):
    """The compressed model LoRA trains on (returned in the report's "model", and how it was
    quantized in "quantized"), the pruning masks to keep, and the quantization-only recipe to
    apply again after merging (None: none)."""
    from nas.train.switches import block_masks

    recipe_file = run.recipe_file
    if not run.settings.compress or recipe_file is None:
        reason = "compress=false" if not run.settings.compress else "no compression.json"
        return {"model": model, "quantized": None, "applied": False, "reason": reason}, {}, None
    compressed = bool(recipe_file.get("applied"))  # DIR holds compressed weights already
    original = {k: v for k, v in recipe_file.items() if k != "applied"}
    before: dict[str, Any] = {"applied": False, "reason": "the recipe does not prune"}
    masks: dict[str, torch.Tensor] = {}
    if recipes.prunes(original):
        if not compressed:
            model, before = run.apply(model, recipes.without_quantization(original))
        # (on compressed weights these masks also hold weights quantization rounded to zero)
        masks = block_masks(model)
    quantize = None
    quantized = recipe_file.get("applied") if compressed else None  # how it was quantized
    if recipes.quantizes(original):
        # Without the pruning masks GPTQ's error feedback would refill pruned weights.
        gptq = original["compression"].get("quant_method") == "gptq"
        quantize = recipes.quantization_only(original, method="rtn" if masks and gptq else None)
        if not compressed:
            model, quantized = run.apply(model, quantize)
    return {**before, "model": model, "quantized": quantized}, masks, quantize
