"""Export a candidate's real `transformers` model to an ExecuTorch `.pte`, as a phone would run it.

Decode is the program ExecuTorch's own Llama export makes: the KV cache lives in the program
(`nas.executorch.static_cache`), sized to `context_len` positions and written in place, so a step
takes `input_ids` [1,1] and `position_ids` [1,1] and returns `logits` [1,1,vocab]. A timing
program fixes the position at the end of the cache (`position=`), since the cost of a step
depends on how much of the cache it reads. Prefill keeps the inputs and outputs of
`nas.onnx.export` (a `.pte` keeps no names): a prompt `input_ids` [1, prompt_len] in, the last
position's `logits` and the cache `present_key_<i>`/`present_value_<i>` out, with attention in a
form XNNPACK runs whole (`nas.executorch.xnnpack`). Shapes are static: latency is quoted at fixed
conditions.

The program is captured with `torch.export`, lowered with the XNNPACK partitioner (the delegate
ExecuTorch runs on Android and iOS CPUs) and serialised. Weights are fp32, or int8/int4 in
XNNPACK's fast formats (`nas.executorch.quantize`). Mixture of experts goes through the same
exportable expert kernels as ONNX (`nas.onnx.moe`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.executorch.quantize import quantized
from nas.executorch.runtime import require
from nas.executorch.static_cache import StaticCacheDecodeStep, static_cache
from nas.executorch.xnnpack import xnnpack_attention
from nas.files import atomic_write
from nas.hardware import DECODE_FORMS
from nas.onnx.check import quiet_export
from nas.onnx.export import PrefillStep
from nas.onnx.moe import Phase, exportable_moe
from nas.quality.models import arch_from_config, build_model

PHASES = ("decode", "prefill")
# How the decode program holds its cache: part of a cached program's file name, so a program
# exported in an earlier form is never timed as this one.
DECODE_FORM = DECODE_FORMS["executorch"]


def as_model(model_or_arch: torch.nn.Module | ArchConfig, seed: int = 0) -> torch.nn.Module:
    """A built model in fp32 (an `ArchConfig` is built with random weights, deterministic in
    `seed`: latency and memory do not depend on the values)."""
    if isinstance(model_or_arch, ArchConfig):
        model_or_arch = build_model(model_or_arch, seed=seed)
    return model_or_arch.float().eval()


def step(
    model: torch.nn.Module, phase: Phase, *, context_len: int, position: int | None = None
) -> torch.nn.Module:
    """The module one program runs: one decode step over a cache of `context_len` positions
    (at `position`, or at the one `position_ids` gives), or the prefill of a prompt."""
    if phase not in PHASES:
        raise NasError(f"unknown phase '{phase}'; use decode or prefill")
    if phase == "decode":
        return StaticCacheDecodeStep(model, context_len, position).eval()
    return PrefillStep(model).eval()


def traced_as_run(wrapper: torch.nn.Module, phase: Phase) -> contextlib.AbstractContextManager:
    """The attention form a program of `phase` is traced in."""
    if phase == "decode":
        assert isinstance(wrapper, StaticCacheDecodeStep)
        return static_cache(wrapper)
    return xnnpack_attention(wrapper.model)


def lower(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    phase: Phase,
    context_len: int,
    position: int | None = None,
) -> bytes:
    """The `.pte` bytes of `step(model, phase, ...)` for inputs like `args`, lowered to
    XNNPACK."""
    require()  # (a decode step's custom ops are loaded by `static_cache`)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    wrapper = step(model, phase, context_len=context_len, position=position)
    with (
        exportable_moe(model, phase),
        traced_as_run(wrapper, phase),
        torch.no_grad(),
        quiet_export(),
    ):
        # strict=False: trace the Python code as it runs (transformers' cache classes and
        # masks), as torch.onnx's dynamo exporter does.
        program = torch.export.export(wrapper, args, strict=False)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        return bytes(edge.to_executorch().buffer)


def export_pte(
    model_or_arch: torch.nn.Module | ArchConfig,
    path: str | Path,
    *,
    weight_bits: int = 16,
    group_size: int | None = None,
    context_len: int,
    phase: Phase = "decode",
    position: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the decode step (or the prefill) of a model as an ExecuTorch program.

    Args:
        model_or_arch: a built Llama or Qwen3-MoE `transformers` model (cast to fp32 in
            place, as `nas.onnx.export` does; its weights are not quantized in place), or an
            `ArchConfig` to build.
        path: the `.pte` file to write (parents are created; written whole or not at all).
        weight_bits: 16 (fp32, what XNNPACK computes float in), 8 or 4.
        group_size: int4's weights per scale, a multiple of 32; int8 is per channel.
        context_len: decode: positions the program's cache holds; prefill: the prompt length.
        phase: "decode" or "prefill".
        position: decode only: None reads the step's position from `position_ids` (a program
            to deploy); an int runs every step there (a program to time: `timing_position`).
    """
    if context_len < 2:
        raise NasError(f"{phase} length must be >= 2, got {context_len}")
    if position is not None and (phase != "decode" or not 0 <= position < context_len):
        raise NasError(f"a {phase} program of length {context_len} cannot run at {position}")
    model = as_model(model_or_arch, seed)
    quant = quantized(model, weight_bits=weight_bits, group_size=group_size)
    args = example_inputs(model, phase, length=context_len)
    path = Path(path)
    program = lower(quant.model, args, phase=phase, context_len=context_len, position=position)
    atomic_write(path, program, setting="out")
    return path


def timing_position(context_len: int) -> int:
    """Where a timing program's decode step runs: the last position of its cache, which a step
    reads whole, as the ONNX graph's step over `context_len - 1` past positions does."""
    return context_len - 1


def example_inputs(
    model: torch.nn.Module, phase: Phase, *, length: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs of a program: random token ids (a prompt, or one token at the cache's last
    position)."""
    arch = arch_from_config(model.config)
    gen = torch.Generator().manual_seed(seed)
    if phase == "prefill":
        return (torch.randint(0, arch.vocab_size, (1, length), generator=gen),)
    ids = torch.randint(0, arch.vocab_size, (1, 1), generator=gen)
    return (ids, torch.full((1, 1), timing_position(length), dtype=torch.long))
