"""int8/int4 in the formats ExecuTorch's XNNPACK delegate runs fast, through torchao.

Both are torchao's `Int8DynamicActivationIntxWeightConfig`, the recipe ExecuTorch's own LLM export
and XNNPACK recipes use (what phones ship):
- int8 (`8da8w`): activations quantized to int8 per token on the fly (asymmetric), weights int8
  with one scale per output channel. XNNPACK has no grouped 8-bit kernel, so `group_size` does
  not apply to 8 bits;
- int4 (`8da4w`): the same activations, weights int4 with one scale per `group_size` inputs
  (a multiple of 32, XNNPACK's block size), scales kept in bf16 as XNNPACK stores them, so the
  torch model computes with exactly the scales the `.pte` holds.

As in `nas.onnx.export` and `predictors.footprint`, only the decoder blocks' linear layers are
quantized; the embedding and the LM head stay float, and so do mixture-of-experts expert weights
(3-D tensors, not linear layers). A layer whose input width is no multiple of the group stays
float too (ExecuTorch's LLM export skips them the same way); `QuantizedModel.float_layers` names
them.

`scored_in_place` gives a model those same numerics as plain float weights and input hooks, the
form the search scores quality in (`compression.quant_format=xnnpack`, `nas.compression`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from nas.errors import NasError
from nas.executorch.runtime import require

XNNPACK_BLOCK = 32  # XNNPACK's blockwise 4-bit kernels take groups of a multiple of 32
KEEP_FLOAT = ("lm_head",)


@dataclass(frozen=True)
class QuantizedModel:
    """A model in one of the formats, and the linear layers left in float."""

    model: torch.nn.Module
    weight_bits: int
    group_size: int | None
    float_layers: list[str] = field(default_factory=list)

    @property
    def format(self) -> str:
        return format_name(self.weight_bits, self.group_size)


def format_name(weight_bits: int, group_size: int | None) -> str:
    """The format in words, as compression.json and the checks record it."""
    if weight_bits == 16:
        return "ExecuTorch XNNPACK fp32"
    weights = "int8 per channel" if weight_bits == 8 else f"int4 per group of {group_size}"
    return f"ExecuTorch XNNPACK int8 dynamic activations (per token), {weights} weights"


def check_format(weight_bits: int, group_size: int | None) -> int | None:
    """The group size the format uses (None: per channel), or a `NasError` for one XNNPACK
    cannot run."""
    if weight_bits not in (16, 8, 4):
        raise NasError(f"weight_bits must be 16, 8 or 4 for ExecuTorch, got {weight_bits}")
    if weight_bits != 4:
        return None
    if group_size is None or group_size < XNNPACK_BLOCK or group_size % XNNPACK_BLOCK:
        raise NasError(
            f"int4 for ExecuTorch's XNNPACK needs group_size a multiple of {XNNPACK_BLOCK}, "
            f"got {group_size}"
        )
    return group_size


def quantized(
    model: torch.nn.Module, *, weight_bits: int, group_size: int | None
) -> QuantizedModel:
    """A copy of `model` in the format (`model` itself, unchanged, for 16 bits: fp32)."""
    group = check_format(weight_bits, group_size)
    if weight_bits == 16:
        return QuantizedModel(model, 16, None)
    require()
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    copied = copy.deepcopy(model)
    skipped: list[str] = []

    def chosen(module: torch.nn.Module, name: str) -> bool:
        if _whole_groups(module, name, group):
            return True
        if _whole_groups(module, name, None):  # a linear layer its groups do not fit
            skipped.append(name)
        return False

    config = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8 if weight_bits == 8 else torch.int4,
        weight_granularity=PerAxis(0) if group is None else PerGroup(group),
        # Grouped scales in bf16: XNNPACK converts them to bf16 anyway (per-channel ones stay
        # fp32), so the torch reference and the .pte compute with the same scales.
        weight_scale_dtype=None if group is None else torch.bfloat16,
    )
    with torch.no_grad():
        quantize_(copied, config, filter_fn=chosen)
    return QuantizedModel(copied.eval(), weight_bits, group, sorted(skipped))


def _whole_groups(module: torch.nn.Module, name: str, group: int | None) -> bool:
    """Whether the format quantizes this layer: a linear layer other than the LM head whose
    input width holds whole groups (any width, per channel)."""
    if not isinstance(module, torch.nn.Linear) or name.split(".")[-1] in KEEP_FLOAT:
        return False
    return group is None or module.in_features % group == 0


def per_token_hooks(model: torch.nn.Module, *, weight_bits: int, group_size: int | None) -> list:
    """Forward pre-hooks quantizing the input of every layer the format quantizes per token, as
    XNNPACK's dynamically quantized kernels do at run time; the hook handles (none for fp32)."""
    group = check_format(weight_bits, group_size)
    if weight_bits == 16:
        return []

    def pre_hook(_module: torch.nn.Module, args: tuple) -> tuple:
        return (per_token_int8(args[0]), *args[1:])

    return [
        module.register_forward_pre_hook(pre_hook)
        for name, module in model.named_modules()
        if _whole_groups(module, name, group)
    ]


def per_token_int8(x: torch.Tensor) -> torch.Tensor:
    """`x` as a linear layer of the format sees it: int8 with one scale and zero point per token
    (asymmetric), dequantized. Torchao's quantized linear layers do this to their input, and
    XNNPACK's dynamically quantized kernels do it at run time; torchao keeps the step private, so
    it is written here from torchao's public primitives (equal to it: tests/executorch)."""
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine,
        dequantize_affine,
        quantize_affine,
    )

    block = (1,) * (x.dim() - 1) + (x.shape[-1],)
    low, high = -128, 127
    scale, zero = choose_qparams_affine(
        x, MappingType.ASYMMETRIC, block, torch.int8, low, high, zero_point_dtype=torch.int8
    )
    codes = quantize_affine(x, block, scale, zero, torch.int8, low, high)
    return dequantize_affine(codes, block, scale, zero, torch.int8, low, high, output_dtype=x.dtype)


@dataclass
class Scored:
    """What `scored_in_place` did: the input hooks (remove them before export) and the linear
    layers left in float."""

    hooks: list = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)


def quantized_weights(
    model: torch.nn.Module, *, weight_bits: int, group_size: int | None
) -> list[str]:
    """Write into `model` the weights the format holds: torchao's dequantized values, as floats,
    in every layer `quantized` quantizes. Returns the linear layers left float."""
    quant = quantized(model, weight_bits=weight_bits, group_size=group_size)
    if quant.model is model:  # fp32: nothing to do
        return []
    with torch.no_grad():
        for name, module in quant.model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, torch.nn.Linear) and hasattr(weight, "qdata"):
                target = model.get_submodule(name)
                target.weight.copy_(weight.dequantize().to(target.weight.dtype))
    return quant.float_layers


def scored_in_place(model: torch.nn.Module, *, weight_bits: int, group_size: int | None) -> Scored:
    """Give `model` the format's numerics in place: torchao's weights (`quantized_weights`), and
    a forward pre-hook that quantizes each quantized layer's input per token (`per_token_hooks`).

    The result computes what `quantized(model, ...)` computes (the same weights and the same
    activation rounding before the same float product), but it stays a float model: recovery and
    export handle it like any other, and it saves as the float32 weights the program holds."""
    float_layers = quantized_weights(model, weight_bits=weight_bits, group_size=group_size)
    return Scored(
        per_token_hooks(model, weight_bits=weight_bits, group_size=group_size), float_layers
    )
