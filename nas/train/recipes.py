"""A compression recipe split around training, for the switches that compress before or during it.

`nas.compression.checkpoint.apply_recipe` runs a whole recipe (structured pruning -> sparsity ->
recovery -> quantization). QAT and LoRA train *inside* it: QAT prunes first, then trains with the
quantizer in the loop (so it replaces the quantization step); LoRA compresses first, trains
adapters on the compressed model, then quantizes the merged weights again. Both skip the recipe's
recovery fine-tune: their training is the recovery.
"""

from __future__ import annotations

import copy
from typing import Any

QAT_BACKEND = (
    "nas.compression.qat: trained with fake-quantized weights on onnxruntime's MatMulNBits grid, "
    "converted (a fixed point of the round-to-nearest quantizer)"
)


def _steps(recipe_file: dict[str, Any]) -> dict[str, Any]:
    return dict(recipe_file.get("recipe") or {})


def prunes(recipe_file: dict[str, Any] | None) -> bool:
    comp = (recipe_file or {}).get("compression", {})
    structured = _steps(recipe_file or {}).get("structured") or {}
    shares = ("heads", "ffn", "experts", "layers")
    return comp.get("sparsity_pattern", "none") != "none" or any(structured.get(k) for k in shares)


def quantizes(recipe_file: dict[str, Any] | None) -> bool:
    return (recipe_file or {}).get("compression", {}).get("weight_bits", 16) < 16


def without_quantization(recipe_file: dict[str, Any]) -> dict[str, Any]:
    """The recipe's pruning (structured, sparsity) only: 16-bit weights, no recovery."""
    out = copy.deepcopy(recipe_file)
    out["compression"].update(weight_bits=16, group_size=0, quant_method="rtn")
    if out.get("recipe"):
        out["recipe"].update(quantization=None, recovery=None)
    return out


def without_recovery(recipe_file: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(recipe_file)
    if out.get("recipe"):
        out["recipe"]["recovery"] = None
    return out


def quantization_only(recipe_file: dict[str, Any], *, method: str | None = None) -> dict[str, Any]:
    """The recipe's quantization only (the weights were pruned already); `method` overrides its
    quantizer (QAT's converted weights are re-checked with round-to-nearest)."""
    out = copy.deepcopy(recipe_file)
    out["compression"].update(sparsity=0.0, sparsity_pattern="none", prune_method="magnitude")
    if method is not None:
        out["compression"]["quant_method"] = method
    if out.get("recipe"):
        out["recipe"].update(structured=None, sparsity=None, recovery=None)
        if method is not None and out["recipe"].get("quantization"):
            out["recipe"]["quantization"]["method"] = method
    return out


def combined(
    before: dict[str, Any] | None, after: dict[str, Any], training: dict[str, Any]
) -> dict[str, Any]:
    """One `applied` report from the pruning applied before training (`before`, may be None or
    not applied) and the quantization applied after it (`after`), with how training took part."""
    if not after.get("applied"):
        return {**after, "training": training}
    if not before or not before.get("applied"):
        return {**after, "training": training}
    recipe = dict(before["recipe"])
    recipe["quantization"] = after["recipe"]["quantization"]
    return {
        **after,
        "summary": f"{before['summary']}, {after['summary']}",
        "recipe": recipe,
        "arch": after["arch"],
        "training": training,
    }
