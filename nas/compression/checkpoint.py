"""Apply an exported compression recipe (`compression.json`) to a trained checkpoint.

The compression is `nas.compression.compress`, the code that scored the trial in the search, so
the saved weights are the ones the search measured: structured pruning (a smaller model), sparsity
masks, the recovery fine-tune when the trial ran one, then quantization, written back as
dequantized float weights (the checkpoint still loads with `from_pretrained`). The runtime also
rounds activations (int8 per block in ONNX Runtime's fast format, per token in XNNPACK's); a
checkpoint holds weights only, so `runtime_numerics` puts that rounding back wherever a compressed
checkpoint is scored. Where the recipe asks for something this install cannot do, nothing is
applied and the result says why: a half-applied recipe would pass for the whole one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from nas.arch import Candidate, CompressionConfig
from nas.quality.models import arch_from_config
from nas.quality.training import ProxyData, ProxySettings


def _not_applied(reason: str) -> dict[str, Any]:
    return {"applied": False, "reason": reason}


def apply_recipe(
    model: torch.nn.Module,
    recipe_file: dict[str, Any] | None,
    *,
    data: ProxyData,
    proxy: ProxySettings,
    seed: int = 0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Compress a trained `model` as `recipe_file` (the parsed compression.json) says.

    Returns:
        The compressed model (a new one when structured pruning shrank it) and a report:
        `applied`, then `reason` when nothing was applied, else `summary`, the executed `recipe`
        and the resulting `arch`.
    """
    if recipe_file is None:
        return model, _not_applied("the model directory has no compression.json")
    if recipe_file.get("applied"):
        return model, _not_applied(
            "these weights are already compressed (compression.json says so); compressing "
            "again would prune and round twice"
        )
    try:
        from nas.compression import StructuredSpec, compress, plan
    except ImportError as err:
        return model, _not_applied(f"this install cannot apply the recipe yet ({err})")
    steps = recipe_file.get("recipe") or {}
    structured_step = steps.get("structured") or {}
    structured = StructuredSpec(
        heads=float(structured_step.get("heads", 0.0)),
        ffn=float(structured_step.get("ffn", 0.0)),
        experts=float(structured_step.get("experts", 0.0)),
        layers=float(structured_step.get("layers", 0.0)),
    )
    candidate = Candidate(
        arch_from_config(model.config), CompressionConfig(**recipe_file["compression"])
    )
    if plan(candidate, structured).is_identity:
        return model, _not_applied("the recipe keeps 16-bit dense weights: nothing to compress")
    done = compress(
        model,
        candidate,
        structured=structured if structured.active else None,
        settings=_settings(steps),
        data=data,
        proxy=proxy,
        seed=seed,
    )
    # The checkpoint holds weights; activations are rounded by the runtime. Without hooks the
    # model trains on (LoRA) and is compressed again like any other, whatever its format.
    done.remove_hooks()
    recipe = done.recipe.to_dict()
    summary = [name for name in recipe["order"] if recipe.get(name)]
    return done.model, {
        "applied": True,
        "summary": ", ".join(_describe(name, recipe[name]) for name in summary),
        "recipe": recipe,
        "arch": done.arch.to_dict(),
        "stored_as": "dequantized float32 weights (the values the device computes with)",
    }


def _settings(steps: dict[str, Any]) -> Any:
    """The compression settings the trial ran with, as its recipe recorded them: the recovery
    fine-tune, and the calibration windows and GPTQ options of calibration-based methods (drawn
    here from this run's training split, at this run's window length)."""
    from nas.compression import CompressionSettings

    recovery = steps.get("recovery") or {}
    quant = steps.get("quantization") or {}
    calibrated = quant.get("calibration") or (steps.get("sparsity") or {}).get("calibration")
    return CompressionSettings(
        recovery_steps=int(recovery.get("steps", 0)),
        recovery_lr=float(recovery.get("lr", 3e-4)),
        distill=bool(recovery.get("distill", False)),
        temperature=float(recovery.get("temperature", 2.0)),
        calibration_windows=int((calibrated or {}).get("windows", 32)),
        act_order=quant.get("act_order") is not False,  # absent (rtn, older recipes): on
        damp=float(quant.get("damp") or 0.01),
        quant_format=quant.get("format", "matmulnbits"),  # absent (older recipes): ONNX Runtime's
        # the format's activations, so the executed recipe records them as the trial's did
        int8_activations=quant.get("activations") == "int8",
    )


@contextlib.contextmanager
def runtime_numerics(model: torch.nn.Module, applied: dict[str, Any]) -> Iterator[torch.nn.Module]:
    """`model`, compressed as `applied` (`apply_recipe`'s report) says, computing while inside as
    its runtime does: activations rounded as the executed quantization step says. What the
    search scored the trial in, so a trained checkpoint's compressed bits per byte compare."""
    from nas.compression.apply import activation_hooks
    from nas.compression.recipe import QuantStep

    quant = (applied.get("recipe") or {}).get("quantization") if applied.get("applied") else None
    step = None
    if quant:
        step = QuantStep(
            bits=quant["bits"],
            group_size=quant["group_size"],
            activations=quant.get("activations", "float"),
            format=quant.get("format", "matmulnbits"),
        )
    hooks = activation_hooks(model, step) if step else []
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()


def _describe(step: str, spec: dict[str, Any]) -> str:
    if step == "quantization":
        group = f"g{spec['group_size']}" if spec["group_size"] else "per channel"
        xnnpack = " (XNNPACK)" if spec.get("format") == "xnnpack" else ""
        return f"int{spec['bits']} {group} {spec['method']}{xnnpack}"
    if step == "sparsity":
        method = spec.get("method", "magnitude")
        return f"{spec['pattern']} {method} sparsity (measured {spec.get('measured') or 0:.0%})"
    if step == "structured":
        return f"structured pruning (removed {spec.get('removed')})"
    return f"recovery fine-tune ({spec['steps']} steps)"
