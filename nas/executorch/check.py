"""A `.pte` run in ExecuTorch's runtime against torch running the same model, and `model.pte`.

The reference is the torch model in the very format the program holds: fp32, or the torchao
int8/int4 model of `nas.executorch.quantize`, which torch runs with the same int8 activation
quantization and the same weight scales (fake-quantized: integer values, float arithmetic).
What is left is the order of float sums, and what it does to int8 activations: most inputs agree
to float rounding (max |Δlogit| ~1e-6 of the logits' scale, fp32, int8 and int4 alike), but now
and then an activation lies so close to a rounding boundary that the two sides round it to
neighbouring int8 values, and the step carries to the logits (measured on an 8-layer
10M-parameter model: 1-2 of 6 inputs, up to 0.8% of the logits' scale in int8 and 2.8% in int4).
`TOLERANCE` allows that; `Agreement.best` shows the exact agreement on the inputs without such a
step (int8 changes that model's logits by ~4% of their scale, int4 by ~33%).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.arch import ArchConfig
from nas.executorch.export import as_model, example_inputs, export_pte, step
from nas.executorch.quantize import format_name, quantized
from nas.executorch.runtime import load_method, version
from nas.onnx.check import quiet_export
from nas.onnx.export import cache_names
from nas.onnx.moe import Phase
from nas.quality.models import arch_from_config

log = logging.getLogger(__name__)

# max |Δlogit| allowed, as a share of max(1, max |logit|): float rounding for fp32 (seen 2e-6);
# for int8/int4, activations rounded to the neighbouring int8 value (seen up to 2.8e-2).
TOLERANCE = {16: 1e-4, 8: 5e-2, 4: 5e-2}
SEEDS = (0, 1, 2, 3)  # inputs compared: random tokens, position after the cache, random cache


@dataclass(frozen=True)
class Agreement:
    """How closely a program's logits follow torch's, over several inputs."""

    worst: float  # max |Δlogit| over all inputs
    best: float  # the smallest per-input max |Δlogit|: the agreement without a rounding step
    scale: float  # max |logit|


def tolerance(weight_bits: int, scale: float) -> float:
    """The largest honest |Δlogit| for this format, for logits up to `scale` in size."""
    return TOLERANCE[weight_bits] * max(1.0, scale)


def compare(
    path: str | Path,
    reference: torch.nn.Module,
    *,
    phase: Phase,
    context_len: int,
    seeds: tuple[int, ...] = SEEDS,
) -> Agreement:
    """The program at `path` against `step(reference, phase)` on the inputs of `seeds`; every
    output is checked for its shape, the logits for their values."""
    program = load_method(path)
    wrapper = step(reference, phase)
    per_input, scale = [], 0.0
    for seed in seeds:
        args = example_inputs(reference, phase, length=context_len, seed=seed)
        with torch.no_grad(), quiet_export():
            expected = wrapper(*args)
        got = program.run(args)
        if len(got) != len(expected):
            raise RuntimeError(f"{path} returned {len(got)} outputs, torch {len(expected)}")
        for mine, theirs in zip(got, expected, strict=True):
            if tuple(mine.shape) != tuple(theirs.shape):
                shapes = f"{tuple(mine.shape)}, torch {tuple(theirs.shape)}"
                raise RuntimeError(f"{path} returned shape {shapes}")
        per_input.append(float((got[0] - expected[0]).abs().max()))
        scale = max(scale, float(expected[0].abs().max()))
    return Agreement(worst=max(per_input), best=min(per_input), scale=scale)


def check_pte(
    path: str | Path,
    model_or_arch: torch.nn.Module | ArchConfig,
    *,
    weight_bits: int = 16,
    group_size: int | None = None,
    context_len: int,
    phase: Phase = "decode",
    seed: int = 0,
) -> float:
    """max |Δlogit| between the `.pte` at `path` and torch running the model it was exported
    from (`export_pte`'s arguments) in the same format."""
    model = as_model(model_or_arch, seed)
    reference = quantized(model, weight_bits=weight_bits, group_size=group_size).model
    return compare(path, reference, phase=phase, context_len=context_len).worst


def write_pte(
    model: torch.nn.Module,
    out_dir: Path,
    *,
    weight_bits: int,
    group_size: int | None,
    context_len: int,
) -> dict[str, Any]:
    """Export `model`'s decode step to `out_dir/model.pte` in the format, run it in ExecuTorch
    and compare with torch (`nas.export runtime=executorch`).

    Returns:
        The check: ExecuTorch version, delegate, format, the graph's inputs and outputs, the
        linear layers left in float, the largest logit difference and its tolerance.
    """
    model = as_model(model)
    group = group_size if weight_bits == 4 else None
    quant = quantized(model, weight_bits=weight_bits, group_size=group)
    path = out_dir / "model.pte"
    export_pte(model, path, weight_bits=weight_bits, group_size=group, context_len=context_len)
    agreement = compare(path, quant.model, phase="decode", context_len=context_len)
    allowed = tolerance(weight_bits, agreement.scale)
    if agreement.worst > allowed:
        raise RuntimeError(f"model.pte disagrees with torch by {agreement.worst:.2g} in the logits")
    log.info("model.pte runs in ExecuTorch %s (max |Δlogit| %.1e)", version(), agreement.worst)
    n_layers = arch_from_config(model.config).n_layers
    return {
        "executorch": version(),
        "delegate": "xnnpack",
        "format": format_name(weight_bits, group),
        "graph": "decode",
        "context_len": context_len,
        "inputs": ["input_ids", "position_ids", *cache_names(n_layers, "past")],
        "outputs": ["logits", *cache_names(n_layers, "present")],
        "float_layers": quant.float_layers,
        "max_abs_logit_diff": agreement.worst,
        "best_input_max_abs_logit_diff": agreement.best,
        "max_abs_logit": agreement.scale,
        "tolerance": allowed,
    }
