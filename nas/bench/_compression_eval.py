"""Measurements behind `python -m nas.bench compression`: held-out bits per window (so that a
variant's difference from the uncompressed model carries a paired standard error), decode graphs
and their latency, and the tables."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.config.schema import ProxySettings
from nas.quality.training import ProxyData, eval_windows

MB = 1024.0 * 1024.0


@torch.no_grad()
def window_bits(model: torch.nn.Module, data: ProxyData, proxy: ProxySettings) -> np.ndarray:
    """Summed next-token loss in bits of each held-out window (the windows `bits_per_byte`
    scores: their sum over `window_bytes` is its value)."""
    model.eval()
    windows = torch.from_numpy(eval_windows(data.heldout_ids, proxy))
    out = []
    for chunk in windows.split(max(1, proxy.batch_size)):
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), chunk[:, 1:], reduction="none"
        )
        out.append(nll.sum(1).double().numpy() / math.log(2))
    return np.concatenate(out)


def window_bytes(data: ProxyData, proxy: ProxySettings) -> int:
    return int(data.token_bytes[eval_windows(data.heldout_ids, proxy)[:, 1:]].sum())


def delta(bits: np.ndarray, base: np.ndarray, total_bytes: int) -> tuple[float, float]:
    """(Δ bits per byte against `base`, its paired standard error over the windows)."""
    diff = bits - base
    return float(diff.sum() / total_bytes), float(
        diff.std(ddof=1) * math.sqrt(len(diff)) / total_bytes
    )


def export_graph_file(model, out: Path, name: str, *, context_len: int, comp: dict) -> Path:
    """The decode step of `model` in the variant's weight format (MatMulNBits for 8/4 bits)."""
    from nas.onnx.export import export_decode, quantize_onnx

    slug = "".join(c if c.isalnum() else "-" for c in name)
    float_path = export_decode(model, out / f"{slug}-fp32.onnx", context_len=context_len)
    if comp["weight_bits"] == 16:
        return float_path
    path = quantize_onnx(
        float_path,
        out / f"{slug}.onnx",
        bits=comp["weight_bits"],
        group_size=comp["group_size"],
        accuracy_level=4 if comp.get("activations") == "int8" else None,
    )
    float_path.unlink()
    return path


def measure_graphs(graphs: dict[str, dict[str, Any]], *, rounds: int, runs: int, threads: int):
    """Decode latency of every graph: `rounds` fresh processes each, interleaved across graphs
    (a loaded machine's drift falls on all of them alike); keeps every round's median."""
    from nas.onnx.measure import measure_isolated

    for graph in graphs.values():
        graph["decode_ms_runs"] = []
    for r in range(rounds):
        for graph in graphs.values():
            m = measure_isolated(graph["onnx"], threads=threads, runs=runs)
            graph["decode_ms_runs"].append(round(m.median_ms, 4))
        print(f"  latency round {r + 1}/{rounds}", flush=True)
    for graph in graphs.values():
        times = graph["decode_ms_runs"]
        graph["decode_ms"] = statistics.median(times)
        graph["decode_ms_min"], graph["decode_ms_max"] = min(times), max(times)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def table(rows: list[dict[str, Any]], graphs: dict[str, dict[str, Any]], name: str) -> str:
    """One markdown table: each variant's Δbpb per training seed (± paired SE), their mean,
    file size and decode latency of its graph."""
    mine = [r for r in rows if r["table"] == name]
    seeds = sorted({r["seed"] for r in mine})
    head = ["model", "variant", *(f"Δbpb seed {s} (±SE)" for s in seeds), "mean Δbpb"]
    head += ["file MB", "decode ms (min-max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(dict.fromkeys((r["model"], r["variant"]) for r in mine))
    for model, variant in order:
        cells = {r["seed"]: r for r in mine if r["model"] == model and r["variant"] == variant}
        first = next(iter(cells.values()))
        per_seed = [
            f"{cells[s]['delta']:+.4f} ±{cells[s]['delta_se']:.4f}" if s in cells else "-"
            for s in seeds
        ]
        mean, _ = _mean_sd([c["delta"] for c in cells.values()])
        graph = graphs.get(f"{model} | {first['graph']}", {})
        latency = (
            f"{graph['decode_ms']:.3f} ({graph['decode_ms_min']:.3f}-{graph['decode_ms_max']:.3f})"
            if "decode_ms" in graph
            else "-"
        )
        size = f"{graph['file_mb']:.2f}" if "file_mb" in graph else "-"
        lines.append(
            "| " + " | ".join([model, variant, *per_seed, f"{mean:+.4f}", size, latency]) + " |"
        )
    return "\n".join(lines)


def interactions(rows: list[dict[str, Any]]) -> str:
    """The combined-technique table: each combination's measured Δ against the sum of its
    parts' Δs (per model, mean over seeds), with the paired SE of the combination."""
    lines = [
        "| model | combination | measured Δbpb | sum of parts | interaction | ±SE |",
        "|---|---|---|---|---|---|",
    ]
    mine = [r for r in rows if r["table"] == "combined"]
    for model in dict.fromkeys(r["model"] for r in mine):
        by = {}
        for r in (r for r in mine if r["model"] == model):
            by.setdefault(r["variant"].removeprefix("combined "), []).append(r)
        mean = {k: float(np.mean([r["delta"] for r in v])) for k, v in by.items()}
        se = {k: float(np.mean([r["delta_se"] for r in v])) for k, v in by.items()}
        for combo in ("P", "Q", "D", "PQ", "PD", "QD", "PQD"):
            if combo not in mean:
                continue
            parts = sum(mean.get(c, math.nan) for c in combo)
            lines.append(
                f"| {model} | {combo} | {mean[combo]:+.4f} | {parts:+.4f} | "
                f"{mean[combo] - parts:+.4f} | {se[combo]:.4f} |"
            )
    return "\n".join(lines)
