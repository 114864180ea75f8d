"""Apply a candidate's compression to its proxy-trained model and score it again.

Order: structured pruning (a smaller architecture) -> sparsity masks -> optional recovery
fine-tune (masks kept) -> weight-only quantization. The model is changed in place (structured
pruning returns a new, smaller one); pass a copy to keep the original.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from nas.arch import ArchConfig, Candidate
from nas.compression.calibrated import prune_calibrated, quantize_calibrated
from nas.compression.calibration import calibration_windows
from nas.compression.matrices import block_matrices
from nas.compression.prune import BACKENDS, measured_sparsity, prune_matrices
from nas.compression.quantize import int8_activation_hooks, quantize_matrices
from nas.compression.recipe import (
    QuantStep,
    Recipe,
    RecoveryStep,
    SparsityStep,
    StructuredStep,
    module_names,
)
from nas.compression.recovery import recover
from nas.compression.structured import prune_structured
from nas.config.schema import CompressionSettings, ProxySettings
from nas.quality.training import ProxyData, bits_per_byte
from nas.shrink import StructuredSpec


@dataclass
class Compressed:
    model: torch.nn.Module
    arch: ArchConfig
    recipe: Recipe
    recovery_losses: list[float]
    # Forward pre-hooks that quantize activations (int8_activations); remove them before export.
    hooks: list = field(default_factory=list)

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks.clear()


PRUNE_BACKENDS = {
    "magnitude": BACKENDS,
    "wanda": "nas.compression.wanda (|w| * ||x|| per output row)",
    "sparsegpt": "nas.compression.sparsegpt (inverse-Hessian saliency and re-fit)",
}
QUANT_BACKENDS = {
    "rtn": "onnxruntime MatMulNBits block quantizer",
    "gptq": "nas.compression.gptq on onnxruntime's MatMulNBits grid",
    "awq": "nas.compression.awq scales, then onnxruntime MatMulNBits block quantizer",
}
# ExecuTorch's XNNPACK formats, as torchao makes them (nas.executorch.quantize): rtn only.
XNNPACK_BACKEND = "torchao Int8DynamicActivationIntxWeightConfig (ExecuTorch XNNPACK)"
XNNPACK_ACTIVATIONS = "int8 per token (asymmetric)"


def shrink_settings(
    candidate: Candidate, settings: CompressionSettings, proxy: ProxySettings | None
) -> CompressionSettings:
    """The recovery a shrink candidate chose, budgeted as a share of the proxy run's steps
    (`settings.shrink_recovery_share`): a fine-tune, or distillation from the unpruned model."""
    shrink = candidate.shrink
    if shrink is None or shrink.recovery == "none" or proxy is None:
        return settings
    steps = max(1, round(settings.shrink_recovery_share * proxy.steps))
    return replace(settings, recovery_steps=steps, distill=shrink.recovery == "distill")


def plan(
    candidate: Candidate,
    structured: StructuredSpec | None = None,
    settings: CompressionSettings | None = None,
    proxy: ProxySettings | None = None,
) -> Recipe:
    """The recipe `compress` will follow, before anything is measured (for untrained trials);
    with `settings`, its recovery fine-tune too (a shrink candidate's own, `shrink_settings`)."""
    comp = candidate.compression
    structured = structured or (candidate.shrink.spec if candidate.shrink else None)
    prune_backend = PRUNE_BACKENDS[comp.prune_method]
    if isinstance(prune_backend, dict):
        prune_backend = prune_backend.get(comp.sparsity_pattern, "")
    recipe = Recipe(
        modules=module_names(_matrix_names(candidate.trained_arch)),
        structured=StructuredStep(
            structured.heads, structured.ffn, structured.experts, layers=structured.layers
        )
        if structured and structured.active
        else None,
        sparsity=SparsityStep(
            comp.sparsity_pattern,
            comp.sparsity,
            method=comp.prune_method,
            scope="per-matrix" if comp.prune_method == "magnitude" else "per-row",
            backend=prune_backend,
        )
        if comp.sparsity_pattern != "none"
        else None,
        quantization=QuantStep(
            comp.weight_bits,
            comp.group_size,
            method=comp.quant_method,
            backend=QUANT_BACKENDS[comp.quant_method],
        )
        if comp.weight_bits < 16
        else None,
    )
    if settings is None:
        return recipe
    if recipe.quantization is not None and settings.quant_format == "xnnpack":
        recipe = _with(recipe, quantization=_xnnpack_step(recipe.quantization))
    settings = shrink_settings(candidate, settings, proxy)
    if settings.recovery_steps == 0 or recipe.is_identity:  # nothing to recover from
        return recipe
    step = RecoveryStep(
        settings.recovery_steps, settings.recovery_lr, settings.distill, settings.temperature
    )
    return _with(recipe, recovery=step)


def _xnnpack_step(step: QuantStep) -> QuantStep:
    """The quantization step in ExecuTorch's XNNPACK numerics (`nas.executorch.quantize`)."""
    if step.method != "rtn":
        raise ValueError(f"{step.method} chooses weights on ONNX Runtime's grid, not XNNPACK's")
    return _with(
        step,
        format="xnnpack",
        group_size=step.group_size if step.bits == 4 else 0,  # int8: one scale per channel
        backend=XNNPACK_BACKEND,
        activations=XNNPACK_ACTIVATIONS,
    )


def _matrix_names(arch: ArchConfig) -> list[str]:
    attn = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    dense = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    moe = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate"]
    names = attn + (dense if arch.n_layers > arch.n_moe_layers else [])
    names += moe if arch.is_moe else []
    return [f"model.layers.0.{n}" for n in names]


def needs_calibration(recipe: Recipe) -> bool:
    """Whether `compress` will run the model on calibration tokens for this recipe."""
    return bool(
        (recipe.structured and (recipe.structured.experts > 0 or recipe.structured.layers > 0))
        or (recipe.sparsity and recipe.sparsity.method != "magnitude")
        or (recipe.quantization and recipe.quantization.method != "rtn")
    )


@dataclass
class _Calibration:
    """Calibration windows: the caller's, or drawn from the training split on first use."""

    given: torch.Tensor | None
    data: ProxyData | None
    seq_len: int
    count: int
    seed: int
    source: str = "given"

    def windows(self) -> torch.Tensor:
        if self.given is None:
            if self.data is None:
                raise ValueError("calibration-based compression needs calibration windows or data")
            self.given = calibration_windows(
                self.data.train_ids, seq_len=self.seq_len, count=self.count, seed=self.seed
            )
            self.source = "training split"
        return self.given

    def available(self) -> torch.Tensor | None:
        return self.windows() if self.given is not None or self.data is not None else None

    def describe(self) -> dict[str, Any]:
        windows = self.windows()
        shape = {"windows": int(windows.shape[0]), "seq_len": int(windows.shape[1])}
        return {**shape, "source": self.source, "seed": self.seed}


def compress(
    model: torch.nn.Module,
    candidate: Candidate,
    *,
    structured: StructuredSpec | None = None,
    settings: CompressionSettings | None = None,
    data: ProxyData | None = None,
    proxy: ProxySettings | None = None,
    calibration: torch.Tensor | None = None,
    seed: int = 0,
) -> Compressed:
    """Compress a trained `model` of `candidate.arch` as `candidate.compression` says.

    Args:
        structured: heads / FFN channels / experts to remove first (a smaller architecture).
        settings: the recovery fine-tune (needs `data` and `proxy` when `recovery_steps` > 0),
            calibration windows and GPTQ's options.
        calibration: token windows [batch, seq] for the calibration-based methods and expert
            ranking; drawn from `data`'s training split (`settings.calibration_windows` windows
            of `proxy.seq_len`) when not given.
    """
    settings = settings or CompressionSettings()
    structured = structured or (candidate.shrink.spec if candidate.shrink else None)
    recipe = plan(candidate, structured, settings, proxy)  # recovery included, as it will run
    arch = candidate.trained_arch
    calib = _Calibration(
        calibration, data, proxy.seq_len if proxy else 64, settings.calibration_windows, seed
    )
    recovery = recipe.recovery
    teacher = None
    if recovery is not None and recovery.distill:
        teacher = copy.deepcopy(model).eval()
    if recipe.structured is not None and structured is not None:
        ranked = structured.experts > 0 or structured.layers > 0
        windows = calib.available() if ranked else None
        model, arch, recipe = _prune_structured(model, arch, recipe, structured, windows)
        if candidate.shrink is not None and arch != candidate.arch:
            raise RuntimeError(f"pruning left {arch}, not the candidate's {candidate.arch}")
    matrices = block_matrices(model)
    masks = None
    if recipe.sparsity is not None:
        masks, recipe = _sparsify(model, matrices, recipe, calib, settings)
    losses: list[float] = []
    if recovery is not None:
        if data is None or proxy is None:
            raise ValueError("a recovery fine-tune needs the proxy data and settings")
        losses = recover(
            model,
            data,
            proxy,
            steps=recovery.steps,
            lr=recovery.lr,
            matrices=matrices,
            masks=masks,
            teacher=teacher,
            temperature=recovery.temperature,
            seed=seed,
        )
    hooks: list = []
    if recipe.quantization is not None:
        if recipe.quantization.format == "xnnpack":
            recipe = _quantize_xnnpack(model, recipe)
        else:
            recipe = _quantize(model, matrices, masks, recipe, calib, settings)
            if settings.int8_activations:
                recipe = _with(recipe, quantization=_with(recipe.quantization, activations="int8"))
        hooks = activation_hooks(model, recipe.quantization)
    return Compressed(
        model=model.eval(), arch=arch, recipe=recipe, recovery_losses=losses, hooks=hooks
    )


def activation_hooks(model: torch.nn.Module, step: QuantStep) -> list:
    """Forward pre-hooks rounding the inputs of the layers `step` quantized as its runtime does
    at run time (ONNX Runtime: int8 per block of the group; XNNPACK: int8 per token); none for
    weight-only float compute. A checkpoint holds weights only, so whoever scores a compressed
    model puts these back; returns the hook handles."""
    if step.format == "xnnpack":
        from nas.executorch.quantize import per_token_hooks  # deferred: torchao is an extra

        return per_token_hooks(model, weight_bits=step.bits, group_size=step.group_size or None)
    if step.activations == "int8":
        return int8_activation_hooks(model, block=step.group_size)
    return []


def _sparsify(model, matrices, recipe: Recipe, calib: _Calibration, settings):
    """Zero weights as the recipe's sparsity step says; (keep-masks, recipe with what happened)."""
    step = recipe.sparsity
    if step.method == "magnitude":
        masks = prune_matrices(matrices, step.pattern, step.sparsity)
    else:
        masks, kept = prune_calibrated(
            model,
            calib.windows(),
            method=step.method,
            pattern=step.pattern,
            sparsity=step.sparsity,
            damp=settings.damp,
        )
        fallback = f"{kept} of {len(matrices)}"
        step = _with(step, calibration=calib.describe(), magnitude_matrices=fallback)
    measured = round(measured_sparsity(matrices), 6)
    return masks, _with(recipe, sparsity=_with(step, measured=measured))


def _quantize(model, matrices, masks, recipe: Recipe, calib: _Calibration, settings) -> Recipe:
    """Round the weights as the recipe's quantization step says; the recipe with what happened."""
    step = recipe.quantization
    if step.method == "rtn":
        quantize_matrices(matrices, bits=step.bits, group_size=step.group_size)
        return recipe
    found = quantize_calibrated(
        model,
        calib.windows(),
        method=step.method,
        bits=step.bits,
        group_size=step.group_size,
        masks=masks,
        act_order=settings.act_order,
        damp=settings.damp,
    )
    changes: dict[str, Any] = {"calibration": calib.describe()}
    if step.method == "gptq":
        changes.update(act_order=settings.act_order, damp=settings.damp)
        changes["rtn_rows"] = f"{found['rtn_rows']} of {found['rows']}"
    else:
        changes["alpha"] = found["alpha"]
    return _with(recipe, quantization=_with(step, **changes))


def _quantize_xnnpack(model: torch.nn.Module, recipe: Recipe) -> Recipe:
    """Give the model the weights ExecuTorch's XNNPACK runs (torchao's, as floats); the recipe
    with the layers left float."""
    from nas.executorch.quantize import quantized_weights  # deferred: torchao is an extra

    step = recipe.quantization
    float_layers = quantized_weights(
        model, weight_bits=step.bits, group_size=step.group_size or None
    )
    return _with(recipe, quantization=_with(step, float_layers=float_layers))


def _prune_structured(
    model: torch.nn.Module,
    arch: ArchConfig,
    recipe: Recipe,
    structured: StructuredSpec,
    calibration: torch.Tensor | None,
) -> tuple[torch.nn.Module, ArchConfig, Recipe]:
    """Remove heads, FFN channels and experts: a smaller model, its architecture, the recipe."""
    result = prune_structured(
        model,
        arch,
        heads=structured.heads,
        ffn=structured.ffn,
        experts=structured.experts,
        layers=structured.layers,
        calibration=calibration,
    )
    step = _with(recipe.structured, arch_before=arch.to_dict(), removed=result.removed)
    return result.model, result.arch, _with(recipe, structured=step)


def _with(obj, **changes):
    return replace(obj, **changes)


def score_compressed(
    model: torch.nn.Module,
    candidate: Candidate,
    data: ProxyData,
    proxy: ProxySettings,
    *,
    settings: CompressionSettings | None = None,
    seed: int = 0,
) -> tuple[float | None, Recipe]:
    """Compress the trained `model` (in place) and return its held-out bits per byte and the
    recipe; the bits per byte is None when the candidate has no compression to apply."""
    done = compress(model, candidate, settings=settings, data=data, proxy=proxy, seed=seed)
    if done.recipe.is_identity:
        return None, done.recipe
    return bits_per_byte(done.model, data, proxy), done.recipe
