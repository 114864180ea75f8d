"""What `python -m nas.predict` prints: predicted latency, memory and energy of a Hugging Face
model config on a device. Reads a Hugging Face `config.json` of a Llama-style
model (llama, mistral, qwen2, qwen3, ...) or a supported MoE model (qwen3_moe, qwen2_moe without
shared experts, mixtral) and prints one JSON object: decode_ms, tokens_per_s (and both at the
device's long context, with the KV cache's size there), prefill_ms,
memory_mb (each with a one-sigma `_std`), calibrated, the predictor's provenance, and an
energy-per-token estimate. Compression keys: weight_bits (16, 8, 4), group_size, sparsity,
sparsity_pattern.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.arch import (
    SPARSITY_PATTERNS,
    Candidate,
    CompressionConfig,
    arch_from_hf,
    read_hf_config,
)
from nas.cli import split_own
from nas.config.compose import load_settings
from nas.config.rules import at_least, between, one_of
from nas.errors import NasError
from nas.hardware import HardwareProfile


def predict(candidate: Candidate, hardware: HardwareProfile) -> dict[str, Any]:
    """Every predicted quantity of `candidate` on `hardware`, as `nas.predict` prints it."""
    from predictors.energy import decode_energy_mj  # deferred: arguments are checked first
    from predictors.factory import latency_predictor, memory_predictor
    from predictors.footprint import float_bytes, kv_cache_bytes

    latency_model = latency_predictor(hardware)
    if warning := latency_model.elsewhere:
        print(f"warning: {warning}", file=sys.stderr)
    latency = latency_model.predict(candidate)
    memory = memory_predictor(hardware).predict(candidate)["memory_mb"]
    decode, prefill = latency["decode_ms"], latency["prefill_ms"]
    long_context = hardware.deploy.long_context
    long = latency_predictor(hardware.at_context(long_context)).predict(candidate)["decode_ms"]
    return {
        "hardware": hardware.name,
        "decode_ms": round(decode.mean, 4),
        "decode_ms_std": round(decode.std, 4),
        "tokens_per_s": round(1000.0 / decode.mean, 2),
        # at a long context the KV cache, not the weights, can drive decode
        "decode_ms_long": round(long.mean, 4),
        "decode_ms_long_std": round(long.std, 4),
        "tokens_per_s_long": round(1000.0 / long.mean, 2),
        "kv_cache_mb_long": round(
            kv_cache_bytes(candidate.arch, long_context, float_bytes(hardware)) / 2**20, 2
        ),
        "prefill_ms": round(prefill.mean, 3),
        "prefill_ms_std": round(prefill.std, 3),
        "memory_mb": round(memory.mean, 2),
        "memory_mb_std": round(memory.std, 2),
        "calibrated": latency_model.calibrated,
        "predictor": latency_model.provenance,
        "energy_mj_per_token": round(decode_energy_mj(candidate, hardware), 5),
        "energy_note": "estimate from bytes moved and FLOPs (predictors/energy.py), not measured",
        "context_len": hardware.deploy.context_len,
        "long_context_len": long_context,
        "prompt_len": hardware.deploy.prompt_len,
        "params": candidate.arch.params,
        "active_params": candidate.arch.active_params,
        "compression": candidate.compression.to_dict(),
        # int8/int4 are priced as the runtime runs them fast: int8 compute on CPUs
        "int8_activations": hardware.int8_activations,
    }


@dataclass
class CompressionArgs:
    weight_bits: int = field(default=16, metadata=one_of(16, 8, 4))
    group_size: int | None = field(default=None, metadata=at_least(1))  # None: 128 when < 16 bits
    sparsity: float = field(default=0.0, metadata=between(0.0, 1.0))
    sparsity_pattern: str = field(default="none", metadata=one_of(*SPARSITY_PATTERNS))

    def config(self) -> CompressionConfig:
        group = self.group_size or (128 if self.weight_bits < 16 else 0)
        try:
            return CompressionConfig(self.weight_bits, group, self.sparsity, self.sparsity_pattern)
        except ValueError as err:
            raise NasError(f"bad compression setting: {err}") from None


@dataclass
class PredictArgs:
    """The command's own settings; other `KEY=VALUE`s choose the hardware profile."""

    arch: str = ""  # a Hugging Face config.json, or its folder
    compression: CompressionArgs = field(default_factory=CompressionArgs)


def run_predict(argv: list[str]) -> dict[str, Any]:
    """The prediction `argv` asks for; the plain function behind the command."""
    args, hydra = split_own(argv, PredictArgs)
    if not args.arch:
        raise NasError("pass arch=PATH/config.json (a Hugging Face model config)")
    candidate = Candidate(arch_from_hf(read_hf_config(Path(args.arch))), args.compression.config())
    hardware = load_settings([*hydra, "budget=smoke"]).hardware
    return predict(candidate, hardware)
