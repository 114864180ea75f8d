"""Compression methods on models trained long enough to matter: bpb, ONNX size, decode latency.

    python -m nas.bench compression [steps=2000] [seeds=2] [models=dense,moe] [parts=all]
                                    [pte_windows=32]
                                    [tune_steps=100] [eval_windows=512] [rounds=3] [runs=60]
                                    [seed=N] [budget=cpu] [hardware=local_cpu] [runs_dir=runs]

Two architectures at the cpu budget's largest width (8 heads of 48, 2 kv-heads, 4 layers): a
dense Llama (FFN 1024, 6.98M parameters) and a Qwen3-MoE (4 experts of FFN 256, top-2), each
trained `steps` steps on the proxy corpus per training seed (cached under
`<cache_dir>/bench-compression/`). Every variant starts from a copy of a trained model:
- quantization: rtn / gptq / awq at int8 g128, int4 g128, int4 g32 (scored and timed in the format
  the hardware's runtime runs fast: on CPUs int8 activations, MatMulNBits accuracy_level=4);
- sparsity: magnitude / wanda / sparsegpt at 50% unstructured and 2:4;
- structured: 25% and 50% of heads, FFN channels and layers (block influence), alone, with a
  `tune_steps` fine-tune, and with a distillation fine-tune from the unpruned model;
- qat: PTQ (rtn, gptq) vs QAT (a fake-quantized fine-tune) at int4 g32, and the same fine-tune in
  float then PTQ (what the extra steps alone do);
- combined: prune (SparseGPT 50%), quantize (GPTQ int4 g32), distil, in all 8 combinations;
- formats (only when named; needs the executorch extra): rtn int8/int4 scored in ONNX Runtime's
  numerics and in ExecuTorch's XNNPACK numerics, and the `.pte` of each run through the first
  `pte_windows` held-out windows against the XNNPACK-scored model (`_compression_formats`).
Held-out bits per byte on `eval_windows` windows; each Δ against the model's own uncompressed
bpb with a paired standard error over windows, per training seed. `parts=` picks tables
(quantization,sparsity,structured,qat,combined,latency); rows already measured (same model, seed
and settings) are read from `<runs_dir>/bench/compression-rows.json`, so a run can be resumed.
`parts=latency` alone trains nothing: it times each variant's final shape and format (worked out
by `nas.shrink.pruned_arch`) and writes `<runs_dir>/bench/compression-latency.json`.
Latency: one decode graph (KV cache of the hardware's `context_len`) per distinct final shape and
weight format, timed in fresh processes, `rounds` per graph, interleaved. Writes
`<runs_dir>/bench/compression.json` and prints markdown tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from nas.arch import ArchConfig
from nas.bench import split_options
from nas.bench._compression_eval import (
    MB,
    delta,
    export_graph_file,
    interactions,
    measure_graphs,
    table,
    window_bits,
    window_bytes,
)
from nas.bench._compression_formats import format_rows, formats_table
from nas.bench._compression_variants import Variant, apply_variant, variants
from nas.compression.calibration import calibration_windows
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.executorch.runtime import require as require_executorch
from nas.files import atomic_write
from nas.quality.data import prepare_data
from nas.quality.models import build_model
from nas.quality.training import train_proxy
from nas.shrink import pruned_arch

BENCH_KEYS = {
    "steps": 2000, "seeds": 2, "models": "dense,moe", "parts": "all", "tune_steps": 100,
    "eval_windows": 512, "rounds": 3, "runs": 60, "calibration_windows": 32, "seed": -1,
    "pte_windows": 32,
}  # fmt: skip
TABLES = ("quantization", "sparsity", "structured", "qat", "combined")
# Not in parts=all: formats needs the executorch extra (nas.bench._compression_formats).
PARTS = (*TABLES, "latency", "formats")


def bench_arches(vocab_size: int) -> dict[str, ArchConfig]:
    # 8 heads of 48: removing 2 (one per kv group) leaves 6, which divides d_model 384.
    common = dict(n_layers=4, n_heads=8, n_kv_heads=2, head_dim=48, vocab_size=vocab_size)
    return {
        "dense": ArchConfig(**common, ffn_dim=1024),
        "moe": ArchConfig(**common, ffn_dim=256, n_experts=4, experts_per_token=2),
    }


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


def _row_key(model: str, seed: int, variant: Variant, own: dict[str, Any], a8: bool) -> str:
    settings = {k: own[k] for k in ("steps", "tune_steps", "eval_windows", "calibration_windows")}
    # int8 activations or weight-only: rows scored in one format are not reused for the other
    settings["activations"] = "int8" if a8 else "float"
    return json.dumps([model, seed, repr(variant), settings], sort_keys=True)


def _measure(variant, trained, arch, data, eval_settings, calib, base_bits, total, seed, lr, a8):
    started = time.perf_counter()
    model, new_arch, recipe, losses = apply_variant(
        variant, trained, arch, data, eval_settings, calibration=calib, seed=seed, lr=lr,
        int8_activations=a8,
    )  # fmt: skip
    bits = window_bits(model, data, eval_settings)
    d, se = delta(bits, base_bits, total)
    row = {
        "table": variant.table,
        "variant": variant.name,
        "graph": variant.graph(arch),
        "bpb": float(bits.sum() / total),
        "delta": d,
        "delta_se": se,
        "params": new_arch.params,
        "arch": new_arch.to_dict(),
        "recipe": recipe,
        "tune_losses": [losses[0], losses[-1]] if losses else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return row


def run_model(name, arch, own, cfg, data, info, store, out_dir) -> list[dict[str, Any]]:
    """Every selected variant of one architecture, for each training seed."""
    parts = TABLES if own["parts"] == "all" else tuple(own["parts"].split(","))
    settings = replace(cfg.proxy.training, steps=own["steps"])
    eval_settings = replace(settings, eval_windows=own["eval_windows"])
    lr = settings.lr * settings.min_lr_ratio  # where the trained model's schedule ended
    # int8/int4 scored in the format the hardware's runtime runs fast (int8 activations on CPUs)
    a8 = cfg.hardware.int8_activations
    rows = []
    # seed=N runs that training seed alone (e.g. a second process on the other core)
    for seed in range(own["seeds"]) if own["seed"] < 0 else [own["seed"]]:
        trained = trained_model(
            arch, data, settings, seed=seed, cache=Path(cfg.cache_dir) / "bench-compression",
            tag=info["corpus_fingerprint"] + str(info["vocab_size"]),
        )  # fmt: skip
        calib = calibration_windows(
            data.train_ids, seq_len=settings.seq_len, count=own["calibration_windows"], seed=seed
        )
        base_bits = window_bits(trained, data, eval_settings)
        total = window_bytes(data, eval_settings)
        print(f"{name} seed {seed}: bpb {base_bits.sum() / total:.4f}", flush=True)
        if "formats" in parts:
            key = json.dumps([name, seed, "formats", own["steps"], own["eval_windows"],
                              own["pte_windows"]])  # fmt: skip
            if key not in store:
                store[key] = format_rows(
                    name, trained, arch, data, eval_settings, base_bits, total, seed=seed,
                    pte_windows=own["pte_windows"],
                )  # fmt: skip
                atomic_write(out_dir / "compression-rows.json", json.dumps(store, indent=1))
            rows += store[key]
        for variant in variants(arch, tune_steps=own["tune_steps"]):
            if variant.table not in parts:
                continue
            key = _row_key(name, seed, variant, own, a8)
            if key not in store:
                row = _measure(
                    variant, trained, arch, data, eval_settings, calib, base_bits, total, seed,
                    lr, a8,
                )  # fmt: skip
                store[key] = {
                    **row,
                    "model": name,
                    "seed": seed,
                    "base_bpb": base_bits.sum() / total,
                }
                atomic_write(out_dir / "compression-rows.json", json.dumps(store, indent=1))
                print(f"  {variant.name}: Δ {row['delta']:+.4f} ±{row['delta_se']:.4f}", flush=True)
            rows.append(store[key])
    return rows


def latency_graphs(rows: list[dict[str, Any]], out: Path, context_len: int) -> dict[str, dict]:
    """One decode graph per distinct final shape and weight format among `rows`: a model of that
    shape in that format (its values do not change the graph's ops, sizes or CPU speed)."""
    from nas.compression.matrices import block_matrices
    from nas.compression.quantize import quantize_matrices

    graphs: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = f"{row['model']} | {row['graph']}"
        if key in graphs:
            continue
        arch = ArchConfig.from_dict(row["arch"])
        model = build_model(arch, max_positions=context_len + 1).eval()
        comp = (row["recipe"].get("quantization") or {}) if row["recipe"] else {}
        fmt = {
            "weight_bits": comp.get("bits", 16),
            "group_size": comp.get("group_size", 0),
            "activations": comp.get("activations", "float"),
        }
        if fmt["weight_bits"] < 16:
            quantize_matrices(
                block_matrices(model), bits=fmt["weight_bits"], group_size=fmt["group_size"]
            )
        path = export_graph_file(model, out, key, context_len=context_len, comp=fmt)
        graphs[key] = {
            "onnx": str(path),
            "file_mb": path.stat().st_size / MB,
            "params": arch.params,
        }
        print(f"  graph {key}: {graphs[key]['file_mb']:.2f} MB", flush=True)
    return graphs


def shape_rows(name: str, arch: ArchConfig, own: dict[str, Any], a8: bool) -> list[dict]:
    """Every variant's final shape and weight format, worked out without training: what
    `parts=latency` alone times (a graph's speed does not depend on its trained values)."""
    rows = []
    for variant in variants(arch, tune_steps=own["tune_steps"]):
        final = pruned_arch(arch, **vars(variant.structured)) if variant.structured else arch
        comp = variant.compression
        quant = None
        if comp.weight_bits < 16:
            quant = {"bits": comp.weight_bits, "group_size": comp.group_size,
                     "activations": "int8" if a8 else "float"}  # fmt: skip
        rows.append({"model": name, "table": variant.table, "variant": variant.name,
                     "graph": variant.graph(arch), "arch": final.to_dict(),
                     "recipe": {"quantization": quant}})  # fmt: skip
    return rows


def latency_table(rows: list[dict[str, Any]], graphs: dict[str, dict[str, Any]]) -> str:
    """One markdown row per graph: its size, decode latency over the rounds, and the variants
    it times."""
    lines = ["| model | format, shape | params | file MB | decode ms: median (min-max) | "
             "variants |", "|---|---|---:|---:|---:|---|"]  # fmt: skip
    for key, graph in graphs.items():
        model, fmt = key.split(" | ", 1)
        names = [r["variant"] for r in rows if f"{r['model']} | {r['graph']}" == key]
        lines.append(
            f"| {model} | {fmt.replace(' | ', ', ')} | {graph['params'] / 1e6:.2f}M | "
            f"{graph['file_mb']:.2f} | {graph['decode_ms']:.3f} ({graph['decode_ms_min']:.3f}-"
            f"{graph['decode_ms_max']:.3f}) | {', '.join(dict.fromkeys(names))} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    own, overrides = split_options(argv, BENCH_KEYS)
    if min(own["steps"], own["seeds"], own["rounds"], own["runs"], own["eval_windows"]) < 1:
        raise NasError("steps, seeds, rounds, runs and eval_windows must be >= 1")
    parts = set(own["parts"].split(",")) - {"all"}
    if parts - set(PARTS):
        raise NasError(f"parts= takes all or any of {', '.join(PARTS)}, got {own['parts']}")
    if "formats" in parts:
        require_executorch()  # one line saying how to install it, before any training
    cfg = load_settings(["budget=cpu", "hardware=local_cpu", *overrides])
    data, _, info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
    arches = bench_arches(info["vocab_size"])
    chosen = own["models"].split(",")
    if set(chosen) - set(arches):
        raise NasError(f"models= takes {', '.join(arches)}, got {own['models']}")
    out_dir = Path(cfg.runs_dir) / "bench"
    rows_path = out_dir / "compression-rows.json"
    store = json.loads(rows_path.read_text()) if rows_path.is_file() else {}
    rows = []
    latency_only = own["parts"] == "latency"
    for name in chosen:
        if latency_only:  # no training: the variants' shapes and formats are known beforehand
            rows += shape_rows(name, arches[name], own, cfg.hardware.int8_activations)
        else:
            rows += run_model(name, arches[name], own, cfg, data, info, store, out_dir)
    graphs: dict[str, dict[str, Any]] = {}
    if own["parts"] == "all" or "latency" in own["parts"].split(","):
        timed = [r for r in rows if r["table"] in TABLES]
        graphs = latency_graphs(timed, out_dir / "compression", cfg.hardware.deploy.context_len)
        measure_graphs(graphs, rounds=own["rounds"], runs=own["runs"], threads=cfg.hardware.threads)
    report = {
        "arches": {k: v.to_dict() for k, v in arches.items()},
        "options": own,
        "proxy": {**asdict(cfg.proxy.training), **info},
        "hardware": cfg.hardware.name,
        "rows": rows,
        "graphs": graphs,
    }
    if latency_only:
        atomic_write(out_dir / "compression-latency.json", json.dumps(report, indent=2))
        print(f"\n### latency\n\n{latency_table(rows, graphs)}")
        print(f"\nwrote {out_dir / 'compression-latency.json'}")
        return 0
    atomic_write(out_dir / "compression.json", json.dumps(report, indent=2))
    for name in TABLES:
        if any(r["table"] == name for r in rows):
            print(f"\n### {name}\n\n{table(rows, graphs, name)}")
    if formats := [r for r in rows if r["table"] == "formats"]:
        print(f"\n### formats: ONNX Runtime's numerics and XNNPACK's\n\n{formats_table(formats)}")
    if any(r["table"] == "combined" for r in rows):
        print(f"\n### combined: measured vs sum of parts\n\n{interactions(rows)}")
    print(f"\nwrote {out_dir / 'compression.json'}")
    return 0
