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
from nas.onnx.moe import Phase
from nas.quality.models import arch_from_config

log = logging.getLogger(__name__)

# max |Δlogit| allowed, as a share of max(1, max |logit|): float rounding for fp32 (seen 2e-6);
# for int8/int4, activations rounded to the neighbouring int8 value (seen up to 2.8e-2).
TOLERANCE = {16: 1e-4, 8: 5e-2, 4: 5e-2}
SEEDS = (0, 1, 2, 3)  # random token sequences (prefill: prompts) compared


@dataclass(frozen=True)
class Agreement:
    """How closely a program's logits follow torch's, over several inputs."""

    worst: float  # max |Δlogit| over all inputs
    best: float  # the smallest per-input max |Δlogit|: the agreement without a rounding step
    scale: float  # max |logit|
    inputs: int  # inputs compared: prompts, or (sequence, position) decode steps


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
    """The program at `path` against torch running `reference`, on the inputs of `seeds`.

    Decode steps the program through random sequences that fill its whole cache, one token and
    position at a time, and compares every step's logits with `reference`'s forward over the
    sequence (its own attention, no cache): the program's cache, written and read in place, must
    give what attention over the whole prefix gives. Prefill runs `step(reference, "prefill")`
    on random prompts; every output is checked for its shape, the logits for their values.
    """
    program = load_method(path)
    per_input, scale = [], 0.0
    for seed in seeds:
        if phase == "decode":
            diffs, top = _decode_steps(program, reference, context_len, seed, path)
        else:
            diffs, top = _prefill(program, reference, context_len, seed, path)
        per_input.extend(diffs)
        scale = max(scale, top)
    return Agreement(worst=max(per_input), best=min(per_input), scale=scale, inputs=len(per_input))


def _decode_steps(
    program: Any, reference: torch.nn.Module, context_len: int, seed: int, path: str | Path
) -> tuple[list[float], float]:
    vocab = arch_from_config(reference.config).vocab_size
    ids = torch.randint(0, vocab, (1, context_len), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference(input_ids=ids, use_cache=False).logits[0]
    diffs = []
    for position in range(context_len):
        got = program.run([ids[:, position : position + 1], torch.tensor([[position]])])
        if len(got) != 1 or tuple(got[0].shape) != (1, 1, vocab):
            shapes = [tuple(t.shape) for t in got]
            raise RuntimeError(f"{path} returned {shapes}, not one [1, 1, {vocab}] logits")
        diffs.append(float((got[0][0, 0] - expected[position]).abs().max()))
    return diffs, float(expected.abs().max())


def _prefill(
    program: Any, reference: torch.nn.Module, prompt_len: int, seed: int, path: str | Path
) -> tuple[list[float], float]:
    wrapper = step(reference, "prefill", context_len=prompt_len)
    args = example_inputs(reference, "prefill", length=prompt_len, seed=seed)
    with torch.no_grad(), quiet_export():  # the model's own attention
        expected = wrapper(*args)
    got = program.run(args)
    if len(got) != len(expected):
        raise RuntimeError(f"{path} returned {len(got)} outputs, torch {len(expected)}")
    for mine, theirs in zip(got, expected, strict=True):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise RuntimeError(
                f"{path} returned shape {tuple(mine.shape)}, torch {tuple(theirs.shape)}"
            )
    return [float((got[0] - expected[0]).abs().max())], float(expected[0].abs().max())


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
    # one sequence, every position of the cache: a step per position, so more would be slow
    agreement = compare(path, quant.model, phase="decode", context_len=context_len, seeds=(0,))
    allowed = tolerance(weight_bits, agreement.scale)
    if agreement.worst > allowed:
        raise RuntimeError(f"model.pte disagrees with torch by {agreement.worst:.2g} in the logits")
    log.info("model.pte runs in ExecuTorch %s (max |Δlogit| %.1e)", version(), agreement.worst)
    arch = arch_from_config(model.config)
    return {
        "executorch": version(),
        "delegate": "xnnpack",
        "format": format_name(weight_bits, group),
        "graph": "decode",
        "context_len": context_len,
        "inputs": ["input_ids", "position_ids"],
        "outputs": ["logits"],
        # ExecuTorch's Llama form: the cache is program state, written in place at position_ids
        "kv_cache": {
            "held_in": "program (mutable buffers)",
            "shape_per_layer": [1, context_len, arch.n_kv_heads, arch.head_dim],
            "ops": ["llama::update_cache", "llama::custom_sdpa"],
        },
        "positions_checked": agreement.inputs,
        "float_layers": quant.float_layers,
        "max_abs_logit_diff": agreement.worst,
        "best_input_max_abs_logit_diff": agreement.best,
        "max_abs_logit": agreement.scale,
        "tolerance": allowed,
    }
