"""Apply a candidate's compression to its proxy-trained model and score it again.

Order: structured pruning (a smaller architecture) -> sparsity masks -> optional recovery
fine-tune (masks kept) -> weight-only quantization. The model is changed in place (structured
pruning returns a new, smaller one); pass a copy to keep the original.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch

from nas.arch import ArchConfig, Candidate
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


@dataclass(frozen=True)
class StructuredSpec:
    """Shares of heads, FFN channels and experts to remove (not sampled by the `slm` space)."""

    heads: float = 0.0
    ffn: float = 0.0
    experts: float = 0.0

    @property
    def active(self) -> bool:
        return self.heads > 0 or self.ffn > 0 or self.experts > 0


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


def plan(candidate: Candidate, structured: StructuredSpec | None = None) -> Recipe:
    """The recipe `compress` will follow, before anything is measured (for untrained trials)."""
    comp = candidate.compression
    return Recipe(
        modules=module_names(_matrix_names(candidate.arch)),
        structured=StructuredStep(structured.heads, structured.ffn, structured.experts)
        if structured and structured.active
        else None,
        sparsity=SparsityStep(
            comp.sparsity_pattern, comp.sparsity, backend=BACKENDS[comp.sparsity_pattern]
        )
        if comp.sparsity_pattern != "none"
        else None,
        quantization=QuantStep(comp.weight_bits, comp.group_size)
        if comp.weight_bits < 16
        else None,
    )


def _matrix_names(arch: ArchConfig) -> list[str]:
    attn = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    dense = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    moe = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate"]
    names = attn + (dense if arch.n_layers > arch.n_moe_layers else [])
    names += moe if arch.is_moe else []
    return [f"model.layers.0.{n}" for n in names]


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
        settings: the recovery fine-tune (needs `data` and `proxy` when `recovery_steps` > 0).
        calibration: token windows [batch, seq] to rank experts by routing weight.
    """
    settings = settings or CompressionSettings()
    recipe = plan(candidate, structured)
    arch = candidate.arch
    teacher = None
    if settings.recovery_steps > 0 and settings.distill and not recipe.is_identity:
        teacher = copy.deepcopy(model).eval()
    if recipe.structured is not None and structured is not None:
        model, arch, recipe = _prune_structured(model, arch, recipe, structured, calibration)
    matrices = block_matrices(model)
    masks = None
    if recipe.sparsity is not None:
        masks = prune_matrices(matrices, recipe.sparsity.pattern, recipe.sparsity.sparsity)
        measured = round(measured_sparsity(matrices), 6)
        recipe = _with(recipe, sparsity=_with(recipe.sparsity, measured=measured))
    losses: list[float] = []
    if settings.recovery_steps > 0 and not recipe.is_identity:
        if data is None or proxy is None:
            raise ValueError("a recovery fine-tune needs the proxy data and settings")
        losses = recover(
            model,
            data,
            proxy,
            steps=settings.recovery_steps,
            lr=settings.recovery_lr,
            matrices=matrices,
            masks=masks,
            teacher=teacher,
            temperature=settings.temperature,
            seed=seed,
        )
        step = RecoveryStep(
            settings.recovery_steps, settings.recovery_lr, settings.distill, settings.temperature
        )
        recipe = _with(recipe, recovery=step)
    hooks: list = []
    if recipe.quantization is not None:
        if settings.int8_activations:
            hooks = int8_activation_hooks(model, block=recipe.quantization.group_size)
            recipe = _with(recipe, quantization=_with(recipe.quantization, activations="int8"))
        quantize_matrices(
            matrices, bits=recipe.quantization.bits, group_size=recipe.quantization.group_size
        )
    return Compressed(
        model=model.eval(), arch=arch, recipe=recipe, recovery_losses=losses, hooks=hooks
    )


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
