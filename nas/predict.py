"""`python -m nas.predict hardware=H arch=PATH/config.json [compression.KEY=VALUE ...]`.

How fast will this model run on my device? Reads a Hugging Face `config.json` of a Llama-style
model (llama, mistral, qwen2, qwen3, ...) or a supported MoE model (qwen3_moe, qwen2_moe without
shared experts, mixtral) and prints one JSON object: decode_ms, tokens_per_s, prefill_ms,
memory_mb (each with a one-sigma `_std`), calibrated, the predictor's provenance, and an
energy-per-token estimate. Compression keys: weight_bits (16, 8, 4), group_size, sparsity,
sparsity_pattern.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.config import as_dict, compose_config
from nas.errors import NasError, run_cli
from nas.hardware import HardwareProfile
from predictors.energy import decode_energy_mj
from predictors.factory import latency_predictor, memory_predictor

EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


def arch_from_hf(config: dict[str, Any]) -> ArchConfig:
    """The `ArchConfig` of a Hugging Face model config; a `NasError` for what it cannot express."""
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        experts = next((int(config[k]) for k in EXPERT_KEYS if config.get(k)), 1)
        ffn = config.get("moe_intermediate_size") if experts > 1 else None
        ffn = int(ffn or config["intermediate_size"])
        if heads * head_dim != hidden:
            raise NasError(
                f"hidden_size={hidden} != num_attention_heads x head_dim ({heads} x {head_dim}); "
                "only models whose width is heads x head_dim are supported"
            )
        if config.get("shared_expert_intermediate_size") or config.get("mlp_only_layers"):
            raise NasError("MoE models with shared experts or mlp_only_layers are not supported")
        return ArchConfig(
            n_layers=int(config["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            ffn_dim=ffn,
            vocab_size=int(config["vocab_size"]),
            n_experts=experts,
            experts_per_token=int(config.get("num_experts_per_tok") or 1),
            moe_every=int(config.get("decoder_sparse_step") or 1),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
    except KeyError as err:
        raise NasError(f"config.json lacks {err}; is it a decoder-only transformer?") from None
    except (TypeError, ValueError) as err:
        raise NasError(f"config.json describes no model this engine can price: {err}") from None


def read_hf_config(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise NasError(f"no config.json at {path}; pass arch=PATH/config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NasError(f"{path} is not JSON: {err.msg} (line {err.lineno})") from None


def predict(candidate: Candidate, hardware: HardwareProfile) -> dict[str, Any]:
    """Every predicted quantity of `candidate` on `hardware`, as `nas.predict` prints it."""
    latency_model = latency_predictor(hardware)
    latency = latency_model.predict(candidate)
    memory = memory_predictor(hardware).predict(candidate)["memory_mb"]
    decode, prefill = latency["decode_ms"], latency["prefill_ms"]
    return {
        "hardware": hardware.name,
        "decode_ms": round(decode.mean, 4),
        "decode_ms_std": round(decode.std, 4),
        "tokens_per_s": round(1000.0 / decode.mean, 2),
        "prefill_ms": round(prefill.mean, 3),
        "prefill_ms_std": round(prefill.std, 3),
        "memory_mb": round(memory.mean, 2),
        "memory_mb_std": round(memory.std, 2),
        "calibrated": latency_model.calibrated,
        "predictor": latency_model.provenance,
        "energy_mj_per_token": round(decode_energy_mj(candidate, hardware), 5),
        "energy_note": "estimate from bytes moved and FLOPs (predictors/energy.py), not measured",
        "context_len": hardware.deploy.context_len,
        "prompt_len": hardware.deploy.prompt_len,
        "params": candidate.arch.params,
        "active_params": candidate.arch.active_params,
        "compression": candidate.compression.to_dict(),
    }


def parse(argv: list[str]) -> tuple[Path, dict[str, Any], list[str]]:
    arch, compression, hydra = None, {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise NasError(f"expected KEY=VALUE, got '{arg}'")
        if key == "arch":
            arch = Path(value)
        elif key.startswith("compression."):
            name = key.removeprefix("compression.")
            if name not in CompressionConfig.__dataclass_fields__:
                fields = ", ".join(CompressionConfig.__dataclass_fields__)
                raise NasError(f"unknown key '{key}'; compression has: {fields}")
            compression[name] = value
        else:
            hydra.append(arg)
    if arch is None:
        raise NasError("pass arch=PATH/config.json (a Hugging Face model config)")
    return arch, compression, hydra


def compression_from(values: dict[str, str]) -> CompressionConfig:
    typed: dict[str, Any] = {}
    try:
        for key, value in values.items():
            typed[key] = {"sparsity": float, "sparsity_pattern": str}.get(key, int)(value)
        if typed.get("weight_bits", 16) < 16 and "group_size" not in typed:
            typed["group_size"] = 128
        return CompressionConfig(**typed)
    except ValueError as err:
        raise NasError(f"bad compression setting: {err}") from None


def main(argv: list[str]) -> int:
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    path, compression, hydra = parse(argv)
    cfg = compose_config([*hydra, "budget=smoke"])
    hardware = HardwareProfile.from_config(as_dict(cfg.hardware))
    candidate = Candidate(arch_from_hf(read_hf_config(path)), compression_from(compression))
    print(json.dumps(predict(candidate, hardware), indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
