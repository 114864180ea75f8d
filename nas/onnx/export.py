"""Export a candidate's real `transformers` model to ONNX, as a device would run it.

Two graphs per model, both with static shapes (latency is quoted at fixed conditions):
- decode: one new token with an explicit KV cache of `context_len - 1` past positions; inputs
  `input_ids` [1,1], `position_ids` [1,1], `past_key_<i>`/`past_value_<i>` [1, kv_heads,
  context_len-1, head_dim]; outputs `logits` [1,1,vocab] and `present_key_<i>`/`present_value_<i>`.
- prefill: a prompt of `prompt_len` tokens, no past; outputs the last position's `logits` and the
  `present_*` cache.

Weights: fp32 (what ONNX Runtime's CPU kernels compute in), fp16 (`dtype="fp16"`, for GPUs), and
weight-only integer formats through `quantize_onnx`: int8 and int4 via `onnxruntime.quantization`'s
MatMulNBits quantizer (one scale per `group_size` weights, the format nas.compression scores), or
int8 via its dynamic quantizer (`method="dynamic"`, per-channel scales). As in
`predictors.footprint`, only the decoder blocks' linear layers are quantized; the embedding and
the LM head stay in float.

Mixture of experts: each MoE block is one ONNX Runtime `MoE` node (`nas.onnx.moe_op`), `QMoE`
with int8/int4 experts (`nas.onnx.qmoe`), as ONNX Runtime's own model builder writes them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache

from nas.arch import ArchConfig, Candidate
from nas.cli import quiet_logs
from nas.errors import NasError
from nas.files import file_mode
from nas.hardware import float_dtype_on, int8_activations_on
from nas.onnx.check import quiet_export
from nas.onnx.moe import Phase
from nas.onnx.moe_op import TRANSLATIONS, ort_moe
from nas.onnx.qmoe import KERNEL as MOE_KERNEL
from nas.onnx.qmoe import quantize_moe_nodes
from nas.quality.models import arch_from_config, build_model

log = logging.getLogger(__name__)

FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# --- the two graphs -------------------------------------------------------------------------------
class DecodeStep(torch.nn.Module):
    """One token in, its logits and the grown KV cache out; the cache is explicit tensors."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_layers = model.config.num_hidden_layers

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(
            input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True
        )
        return (out.logits, *_flatten_cache(out.past_key_values))


class PrefillStep(torch.nn.Module):
    """A whole prompt in; the last position's logits and the KV cache out."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor):
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        return (out.logits, *_flatten_cache(out.past_key_values))


def _flatten_cache(cache: DynamicCache) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for layer in cache.layers:
        flat += [layer.keys, layer.values]
    return flat


def cache_names(n_layers: int, prefix: str) -> list[str]:
    """`<prefix>_key_0, <prefix>_value_0, ...`: the graph's cache inputs or outputs, in order."""
    return [f"{prefix}_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def example_inputs(
    arch: ArchConfig, phase: Phase, *, length: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """Inputs of the graph: `length` is the context (decode) or the prompt length (prefill)."""
    if phase == "prefill":
        return (torch.zeros(1, length, dtype=torch.long),)
    ids = torch.zeros(1, 1, dtype=torch.long)
    position = torch.full((1, 1), length - 1, dtype=torch.long)
    shape = (1, arch.n_kv_heads, length - 1, arch.head_dim)
    generator = torch.Generator().manual_seed(0)
    past = [torch.randn(shape, generator=generator).to(dtype) for _ in range(2 * arch.n_layers)]
    return (ids, position, *past)


def _as_model(model_or_arch: torch.nn.Module | ArchConfig, seed: int) -> torch.nn.Module:
    if isinstance(model_or_arch, ArchConfig):
        return build_model(model_or_arch, seed=seed)
    return model_or_arch


def export_graph(
    model_or_arch: torch.nn.Module | ArchConfig,
    path: str | Path,
    *,
    phase: Phase,
    length: int,
    dtype: str = "fp32",
    seed: int = 0,
) -> Path:
    """Export the decode step (KV cache of `length` positions) or prefill (`length` tokens).

    Args:
        model_or_arch: a built `transformers` model, or an `ArchConfig` to build (random weights,
            deterministic in `seed`: latency and memory do not depend on the values).
        path: the `.onnx` file to write (weights inline; parents are created).
        phase: "decode" or "prefill".
        length: context length for decode (past = length - 1), prompt length for prefill.
        dtype: "fp32" or "fp16" float weights and activations.
    """
    if dtype not in FLOAT_DTYPES:
        raise NasError(f"unknown export dtype '{dtype}'; use one of {sorted(FLOAT_DTYPES)}")
    if length < 2:
        raise NasError(f"{phase} length must be >= 2, got {length}")
    model = _as_model(model_or_arch, seed).to(FLOAT_DTYPES[dtype]).eval()
    arch_view = arch_from_config(model.config)
    args = example_inputs(arch_view, phase, length=length, dtype=FLOAT_DTYPES[dtype])
    present = cache_names(arch_view.n_layers, "present")
    if phase == "decode":
        wrapper: torch.nn.Module = DecodeStep(model)
        inputs = ["input_ids", "position_ids", *cache_names(arch_view.n_layers, "past")]
    else:
        wrapper = PrefillStep(model)
        inputs = ["input_ids"]
    wrapper.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ort_moe(model), torch.no_grad(), quiet_export():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=inputs,
            output_names=["logits", *present],
            optimize=True,
            custom_translation_table=TRANSLATIONS,
        )
    program.save(str(path), external_data=False)
    return path


def export_decode(
    model_or_arch: torch.nn.Module | ArchConfig,
    path: str | Path,
    *,
    context_len: int,
    dtype: str = "fp32",
    seed: int = 0,
) -> Path:
    """The decode step with a KV cache of `context_len` positions (see `export_graph`)."""
    return export_graph(
        model_or_arch, path, phase="decode", length=context_len, dtype=dtype, seed=seed
    )


def export_prefill(
    model_or_arch: torch.nn.Module | ArchConfig,
    path: str | Path,
    *,
    prompt_len: int,
    dtype: str = "fp32",
    seed: int = 0,
) -> Path:
    """Prefill of a `prompt_len`-token prompt (see `export_graph`)."""
    return export_graph(
        model_or_arch, path, phase="prefill", length=prompt_len, dtype=dtype, seed=seed
    )


# --- weight quantization -------------------------------------------------------------------------
def lm_head_nodes(model) -> list[str]:  # model: onnx.ModelProto
    """Names of the MatMul/Gemm nodes that produce `logits` (the LM head): kept in float."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names, frontier, seen = [], ["logits"], set()
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("MatMul", "Gemm"):
            names.append(node.name)
            continue
        frontier.extend(node.input)
    return names


def quantize_onnx(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int,
    group_size: int,
    method: str = "nbits",
    accuracy_level: int | None = None,
) -> Path:
    """Weight-only quantization of the decoder blocks' MatMuls (the LM head stays float).

    Args:
        src: a float `.onnx` from `export_graph`.
        dst: where to write the quantized model.
        bits: 8 or 4.
        group_size: weights per scale along the input dimension; a power of two >= 16.
        method: "nbits" (default) -> `onnxruntime.quantization`'s MatMulNBits quantizer: int8 or
            int4 weights with one scale per `group_size` weights, symmetric - the format
            nas.compression scores, so the timed model is the scored one. "dynamic" (8-bit only)
            -> `quantize_dynamic`: int8 weights with per-channel scales, activations quantized on
            the fly (MatMulInteger); `group_size` does not apply.
        accuracy_level: "nbits" only; 4 lets ONNX Runtime quantize activations to int8 on the
            fly (faster integer kernels, other numerics than the scored weight-only model); the
            default computes in fp32 with exactly the scored weights.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    if bits not in (8, 4):
        raise NasError(f"quantize_onnx handles 8 and 4 bits, got {bits}")
    if method not in ("nbits", "dynamic") or (method == "dynamic" and bits != 8):
        raise NasError(f"quantization method '{method}' unknown for {bits} bits; use nbits")
    if method == "nbits" and (group_size < 16 or group_size & (group_size - 1)):
        raise NasError(f"group_size must be a power of two >= 16, got {group_size}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src))
    with quiet_logs():
        return _quantize(
            model, src, dst, bits=bits, group_size=group_size, method=method, level=accuracy_level
        )


def _quantize(
    model, src: Path, dst: Path, *, bits: int, group_size: int, method: str, level: int | None
) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    keep = lm_head_nodes(model)
    # Experts first: QMoE in the same format (per channel for the dynamic method).
    group = None if method == "dynamic" else group_size
    quantize_moe_nodes(model, bits=bits, group_size=group, accuracy_level=level)
    if method == "dynamic":
        quantize_dynamic(
            model,
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep,
            extra_options={"MatMulConstBOnly": True},
        )
        return dst
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=group_size,
        is_symmetric=True,
        accuracy_level=level,
        nodes_to_exclude=keep,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


# --- a candidate, end to end ----------------------------------------------------------------------
@dataclass(frozen=True)
class ExportedCandidate:
    """The ONNX files of one candidate and the conditions they were exported for."""

    candidate: Candidate
    decode: Path
    prefill: Path
    context_len: int
    prompt_len: int
    dtype: str


def export_candidate(
    candidate: Candidate,
    out_dir: str | Path,
    *,
    context_len: int,
    prompt_len: int,
    processor: str = "cpu",
    int8_activations: bool | None = None,
    seed: int = 0,
    phases: tuple[str, ...] = ("decode", "prefill"),
) -> ExportedCandidate:
    """Export decode and prefill graphs of `candidate` in its compression format to `out_dir`
    (only those in `phases`; the others' paths are returned but not written).

    int8/int4 weights are MatMulNBits with int8 compute (accuracy_level=4) when
    `int8_activations`, which defaults to the processor's fast format (on for CPUs; see
    `HardwareProfile.int8_activations`), and with float compute otherwise.

    Files are reused when already there (the directory name should identify the candidate and
    conditions, e.g. `Candidate.key(context_len, prompt_len)`).
    """
    out_dir = Path(out_dir)
    comp = candidate.compression
    dtype = float_dtype_on(processor)
    if int8_activations is None:
        int8_activations = int8_activations_on(processor)
    tag = dtype if comp.weight_bits == 16 else f"int{comp.weight_bits}g{comp.group_size}"
    tag += "a8" if int8_activations and comp.weight_bits < 16 else ""
    kernel = f"-{MOE_KERNEL}" if candidate.arch.is_moe else ""  # not the older kernel's files
    tag += kernel
    model = None
    paths: dict[str, Path] = {}
    for phase, length in (("decode", context_len), ("prefill", prompt_len)):
        final = out_dir / f"{phase}-{tag}.onnx"
        paths[phase] = final
        if final.exists() or phase not in phases:
            continue
        if model is None:
            model = build_model(candidate.arch, seed=seed)
        float_path = out_dir / f"{phase}-{dtype}{kernel}.onnx"
        if not float_path.exists():
            with _atomic(float_path) as tmp:
                export_graph(model, tmp, phase=phase, length=length, dtype=dtype)
        if comp.weight_bits < 16:
            with _atomic(final) as tmp:
                quantize_onnx(
                    float_path,
                    tmp,
                    bits=comp.weight_bits,
                    group_size=comp.group_size,
                    accuracy_level=4 if int8_activations else None,
                )
    return ExportedCandidate(
        candidate=candidate,
        decode=paths["decode"],
        prefill=paths["prefill"],
        context_len=context_len,
        prompt_len=prompt_len,
        dtype=dtype,
    )


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary name in the same folder, renamed to `path` on success: no half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # not mkstemp's 0600: a shared runs folder stays readable
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
