"""Export a candidate's real `transformers` model to an ExecuTorch `.pte`, as a phone would run it.

The graphs are those of `nas.onnx.export`, with the same inputs and outputs in the same order
(a `.pte` keeps no names): decode takes `input_ids` [1,1], `position_ids` [1,1] and
`past_key_<i>`/`past_value_<i>` [1, kv_heads, context_len-1, head_dim], and returns `logits`
[1,1,vocab] and the grown cache `present_key_<i>`/`present_value_<i>`; prefill takes a prompt
`input_ids` [1, prompt_len] and returns the last position's `logits` and the cache. Shapes are
static: latency is quoted at fixed conditions.

The program is captured with `torch.export`, lowered with the XNNPACK partitioner (the delegate
ExecuTorch runs on Android and iOS CPUs) and serialised. Attention and the cache are traced in
equivalent forms XNNPACK runs without copying the cache (`nas.executorch.xnnpack`). Weights are
fp32, or int8/int4 in XNNPACK's fast formats (`nas.executorch.quantize`). Mixture of experts goes
through the same exportable expert kernels as ONNX (`nas.onnx.moe`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.executorch.quantize import quantized
from nas.executorch.runtime import require
from nas.executorch.xnnpack import CacheDecodeStep, xnnpack_attention
from nas.files import atomic_write
from nas.onnx.check import quiet_export
from nas.onnx.export import PrefillStep
from nas.onnx.moe import Phase, exportable_moe
from nas.quality.models import arch_from_config, build_model

PHASES = ("decode", "prefill")


def as_model(model_or_arch: torch.nn.Module | ArchConfig, seed: int = 0) -> torch.nn.Module:
    """A built model in fp32 (an `ArchConfig` is built with random weights, deterministic in
    `seed`: latency and memory do not depend on the values)."""
    if isinstance(model_or_arch, ArchConfig):
        model_or_arch = build_model(model_or_arch, seed=seed)
    return model_or_arch.float().eval()


def step(model: torch.nn.Module, phase: Phase) -> torch.nn.Module:
    """The module one program runs: one decode step, or the prefill of a prompt."""
    if phase not in PHASES:
        raise NasError(f"unknown phase '{phase}'; use decode or prefill")
    return (CacheDecodeStep(model) if phase == "decode" else PrefillStep(model)).eval()


def lower(model: torch.nn.Module, args: tuple[torch.Tensor, ...], *, phase: Phase) -> bytes:
    """The `.pte` bytes of `step(model, phase)` for inputs like `args`, lowered to XNNPACK."""
    require()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    wrapper = step(model, phase)
    with exportable_moe(model, phase), xnnpack_attention(model), torch.no_grad(), quiet_export():
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
        context_len: decode: positions in the cache after the step (past = context_len - 1);
            prefill: the prompt length.
        phase: "decode" or "prefill".
    """
    if context_len < 2:
        raise NasError(f"{phase} length must be >= 2, got {context_len}")
    model = as_model(model_or_arch, seed)
    quant = quantized(model, weight_bits=weight_bits, group_size=group_size)
    args = example_inputs(model, phase, length=context_len)
    path = Path(path)
    atomic_write(path, lower(quant.model, args, phase=phase), setting="out")
    return path


def example_inputs(
    model: torch.nn.Module, phase: Phase, *, length: int, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs of a program: random token ids, the position after the cache, a random cache."""
    arch = arch_from_config(model.config)
    gen = torch.Generator().manual_seed(seed)
    if phase == "prefill":
        return (torch.randint(0, arch.vocab_size, (1, length), generator=gen),)
    ids = torch.randint(0, arch.vocab_size, (1, 1), generator=gen)
    position = torch.full((1, 1), length - 1, dtype=torch.long)
    shape = (1, arch.n_kv_heads, length - 1, arch.head_dim)
    past = [torch.randn(shape, generator=gen) for _ in range(2 * arch.n_layers)]
    return (ids, position, *past)
