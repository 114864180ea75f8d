"""Compression on one trained proxy model: bits per byte, ONNX decode latency and file size.

    python -m nas.bench compression [steps=300] [rounds=3] [runs=60] [budget=cpu]
                                    [hardware=local_cpu] [runs_dir=runs]

One dense model (4 layers, 8 heads of 48 with 2 kv-heads, d_model 384, FFN 1024) is trained once
on the proxy corpus (cached under `<cache_dir>/bench-compression/`); every variant starts from a
copy of it: fp32, int8 g128, int4 g128, int4 g32, 50% unstructured, 2:4, 25% of heads pruned,
25% of FFN channels pruned; and int8 g128 / int4 g32 again with ONNX Runtime's int8 activations
("a8", accuracy_level=4: faster kernels; scored with the same int8 activations in torch), and
`nas.onnx.export`'s int8 (dynamic quantization, per-channel weights; its bpb is the weight-only
int8 model's, not its own).
For each: held-out bits per byte, the decode-step ONNX graph (KV cache of the hardware's
`context_len`) with the variant's weights, its file size, the predicted stored weight bytes, and
decode latency measured with ONNX Runtime in a fresh process per invocation, `rounds`
invocations per variant, interleaved. Writes `<runs_dir>/bench/compression.json`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.bench import split_options
from nas.compression import CompressionSettings, StructuredSpec, compress
from nas.compression.matrices import block_matrices
from nas.compression.prune import measured_sparsity
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.files import atomic_write
from nas.quality.data import prepare_data
from nas.quality.models import build_model
from nas.quality.training import bits_per_byte, train_proxy
from predictors.footprint import stored_weight_bytes

BENCH_KEYS = {"steps": 300, "rounds": 3, "runs": 60, "seed": 0}
MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Variant:
    name: str
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    structured: StructuredSpec | None = None
    accuracy_level: int | None = None  # 4: ONNX Runtime computes with int8 activations
    dynamic_int8: bool = False  # nas.onnx.export's int8 instead: per-channel, int8 activations


VARIANTS = (
    Variant("fp32"),
    Variant("int8 g128", CompressionConfig(weight_bits=8, group_size=128)),
    Variant("int4 g128", CompressionConfig(weight_bits=4, group_size=128)),
    Variant("int4 g32", CompressionConfig(weight_bits=4, group_size=32)),
    Variant("int8 g128 a8", CompressionConfig(weight_bits=8, group_size=128), accuracy_level=4),
    Variant("int4 g32 a8", CompressionConfig(weight_bits=4, group_size=32), accuracy_level=4),
    Variant("int8 dynamic", CompressionConfig(weight_bits=8, group_size=128), dynamic_int8=True),
    Variant("50% unstructured", CompressionConfig(sparsity=0.5, sparsity_pattern="unstructured")),
    Variant("2:4", CompressionConfig(sparsity=0.5, sparsity_pattern="2:4")),
    Variant("25% heads pruned", structured=StructuredSpec(heads=0.25)),
    Variant("25% FFN pruned", structured=StructuredSpec(ffn=0.25)),
)


def bench_arch(vocab_size: int) -> ArchConfig:
    # 8 heads of 48: removing 2 (one per kv group) leaves 6, which divides d_model 384.
    return ArchConfig(
        n_layers=4, n_heads=8, n_kv_heads=2, head_dim=48, ffn_dim=1024, vocab_size=vocab_size
    )


def trained_model(arch, data, settings, *, seed: int, cache: Path, tag: str) -> torch.nn.Module:
    """The bench's trained model, from the cache when the same run was done before."""
    key = hashlib.sha256(
        json.dumps([arch.to_dict(), asdict(settings), seed, tag], sort_keys=True).encode()
    ).hexdigest()[:16]
    path = cache / f"{key}.pt"
    model = build_model(arch, seed=seed, max_positions=settings.seq_len)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        print(f"trained model from {path}", flush=True)
        return model.eval()
    print(
        f"training {arch.params / 1e6:.2f}M parameters for {settings.steps} steps ...", flush=True
    )
    result = train_proxy(arch, data, settings, seed=seed)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), path)
    print(f"  trained in {result.seconds:.0f} s, held-out bpb {result.bpb:.4f}", flush=True)
    return result.model.eval()


def prepare_variant(variant, trained, arch, data, settings, hardware, out_dir: Path, calib):
    """Compress a copy, score it, and write its decode graph; returns the row (no latency yet)."""
    from nas.onnx.export import export_decode, quantize_onnx

    candidate = Candidate(arch=arch, compression=variant.compression)
    settings_c = CompressionSettings(int8_activations=variant.accuracy_level == 4)
    done = compress(
        copy.deepcopy(trained),
        candidate,
        structured=variant.structured,
        calibration=calib,
        settings=settings_c,
    )
    bpb = bits_per_byte(done.model, data, settings)
    done.remove_hooks()  # the ONNX graph gets its activation quantization from accuracy_level
    slug = variant.name.replace("%", "pct").replace(" ", "-").replace(":", "of")
    float_path = out_dir / f"{slug}-fp32.onnx"
    export_decode(done.model, float_path, context_len=hardware.deploy.context_len)
    path = float_path
    comp = variant.compression
    if variant.dynamic_int8:
        path = quantize_onnx(
            float_path, out_dir / f"{slug}.onnx", bits=8, group_size=128, method="dynamic"
        )
        float_path.unlink()
    elif comp.weight_bits < 16:
        path = quantize_onnx(
            float_path,
            out_dir / f"{slug}.onnx",
            bits=comp.weight_bits,
            group_size=comp.group_size,
            accuracy_level=variant.accuracy_level,
        )
        float_path.unlink()
    priced = Candidate(arch=done.arch, compression=comp)
    return {
        "variant": variant.name,
        "arch": done.arch.to_dict(),
        "compression": comp.to_dict(),
        "recipe": done.recipe.to_dict(),
        "params": done.arch.params,
        "bpb": bpb,
        # a8: scored with int8 activations; dynamic: bpb is the weight-only model's
        "activations": "int8" if variant.accuracy_level or variant.dynamic_int8 else "fp32",
        "zeros": round(measured_sparsity(block_matrices(done.model)), 4),
        "onnx": str(path),
        "file_mb": path.stat().st_size / MB,
        "predicted_weight_mb": stored_weight_bytes(priced, hardware) / MB,
    }


def measure_rows(rows: list[dict[str, Any]], *, rounds: int, runs: int, threads: int) -> None:
    """Decode latency: `rounds` fresh-process invocations per graph, interleaved across graphs."""
    from nas.onnx.measure import measure_isolated

    for row in rows:
        row["decode_ms_runs"] = []
    for r in range(rounds):
        for row in rows:
            m = measure_isolated(row["onnx"], threads=threads, runs=runs)
            row["decode_ms_runs"].append(round(m.median_ms, 4))
        print(f"  round {r + 1}/{rounds} measured", flush=True)
    for row in rows:
        times = row["decode_ms_runs"]
        row["decode_ms"] = statistics.median(times)
        row["decode_ms_min"], row["decode_ms_max"] = min(times), max(times)


def format_rows(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    head = (
        f"{'variant':<18} {'params':>7} {'bpb':>7} {'Δbpb':>7} {'zeros':>6} {'file MB':>8} "
        f"{'pred MB':>8} {'decode ms (min-max)':>22} {'vs fp32':>7}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        spread = f"{row['decode_ms']:.3f} ({row['decode_ms_min']:.3f}-{row['decode_ms_max']:.3f})"
        lines.append(
            f"{row['variant']:<18} {row['params'] / 1e6:>6.2f}M {row['bpb']:>7.4f} "
            f"{row['bpb'] - base['bpb']:>+7.4f} {row['zeros']:>6.2f} {row['file_mb']:>8.2f} "
            f"{row['predicted_weight_mb']:>8.2f} {spread:>22} "
            f"{row['decode_ms'] / base['decode_ms']:>6.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    own, overrides = split_options(argv, BENCH_KEYS)
    if min(own["steps"], own["rounds"], own["runs"]) < 1:
        raise NasError("steps, rounds and runs must be >= 1")
    cfg = load_settings(["budget=cpu", "hardware=local_cpu", *overrides])
    hardware = cfg.hardware
    settings = replace(cfg.proxy.training, steps=own["steps"])
    cache = Path(cfg.cache_dir)
    data, _, info = prepare_data(cfg.proxy, cache)
    arch = bench_arch(info["vocab_size"])
    torch.manual_seed(own["seed"])
    trained = trained_model(
        arch,
        data,
        settings,
        seed=own["seed"],
        cache=cache / "bench-compression",
        tag=info["corpus_fingerprint"] + str(info["vocab_size"]),
    )
    out_dir = Path(cfg.runs_dir) / "bench" / "compression"
    span = settings.seq_len + 1
    calib = torch.from_numpy(data.train_ids[: 8 * span].reshape(8, span).astype("int64"))
    rows = []
    for variant in VARIANTS:
        rows.append(
            prepare_variant(variant, trained, arch, data, settings, hardware, out_dir, calib)
        )
        print(
            f"  {variant.name}: bpb {rows[-1]['bpb']:.4f}, {rows[-1]['file_mb']:.2f} MB", flush=True
        )
    measure_rows(rows, rounds=own["rounds"], runs=own["runs"], threads=hardware.threads)
    report = {
        "arch": arch.to_dict(),
        "proxy": {**asdict(settings), **info},
        "hardware": hardware.name,
        "context_len": hardware.deploy.context_len,
        "threads": hardware.threads,
        "rounds": own["rounds"],
        "runs_per_round": own["runs"],
        "rows": rows,
    }
    atomic_write(Path(cfg.runs_dir) / "bench" / "compression.json", json.dumps(report, indent=2))
    print(format_rows(rows))
    print(f"\nwrote {Path(cfg.runs_dir) / 'bench' / 'compression.json'}")
    return 0
