"""The prune bench's printed report: markdown tables ready for BENCHMARKS.md."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def timing(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Mean seconds per training step of each kind of run (one worker thread each), and the
    CPU-seconds the runs took: what an estimate of a larger run starts from."""
    out: dict[str, float] = {}
    for name, records in runs.items():
        steps = sum(r["steps"] for r in records)
        seconds = sum(r["seconds"] for r in records)
        out[f"{name}_seconds_per_step"] = seconds / max(1, steps)
        out[f"{name}_cpu_seconds"] = seconds
    return out


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def print_report(report: dict[str, Any]) -> None:
    parent, fid = report["parent"], report["fidelity"]
    truth, distill = fid["truth"], report["distill"]
    trained = parent["training"]
    how = f", trained {trained['steps']} steps in {trained['seconds']:.0f} s" if trained else ""
    print(f"\nparent: {parent['arch']}, {parent['params'] / 1e6:.2f}M parameters, "
          f"{parent['bpb']:.4f} held-out bits per byte{how}")  # fmt: skip
    print(
        f"\n**Distillation proxy fidelity** on {len(fid['children'])} children; truth: "
        f"{truth['steps']} distillation steps (cosine) x {truth['seeds']} seeds; distillation "
        f"lr {distill['lr']:g}, T {distill['temperature']:g}, weight {distill['weight']:g}"
    )
    print(f"\nnoise ceiling: tau between truth seeds {_fmt(truth['tau_between_seeds'])} "
          f"(min {_fmt(truth['tau_between_seeds_min'])})\n")  # fmt: skip
    print("| score | Kendall tau | top-5 | regret (bpb) |")
    print("|---|---:|---:|---:|")
    for name, g in fid["grades"].items():
        print(f"| {name} | {_fmt(g['kendall_tau'])} | {g['top5']} | {g['regret_bpb']:.4f} |")
    print("\n| child | active params | as pruned | rung 0 | truth (mean) |")
    print("|---|---:|---:|---:|---:|")
    rung0 = next(v for k, v in fid["scores"].items() if k.startswith("rung 0"))
    pruned = fid["scores"]["as pruned (no training)"]
    for i, name in enumerate(fid["children"]):
        print(f"| {name} | {fid['active_params'][i]:,} | {pruned[i]:.4f} | {rung0[i]:.4f} | "
              f"{truth['bpb_mean'][i]:.4f} |")  # fmt: skip
    print(
        f"\n**Pruned + distilled vs the same shape from scratch, equal FLOPs** (parent "
        f"{parent['bpb']:.4f} bpb; a distillation step = child fwd+bwd + parent fwd)\n"
    )
    print("| child | active params | distilled steps | distilled bpb | scratch steps | "
          "scratch bpb | Δ (scratch − distilled) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in report["versus_scratch"]:
        delta = np.mean(row["scratch_bpb"]) - np.mean(row["distilled_bpb"])
        print(f"| {row['child']} | {row['active_params']:,} | {row['distill_steps']} | "
              f"{_mean_sd(row['distilled_bpb'])} | {row['scratch_steps']} | "
              f"{_mean_sd(row['scratch_bpb'])} | {delta:+.4f} |")  # fmt: skip
    rand = report["versus_random"]
    print(
        f"\n**Activation importance vs random units at equal size** (as pruned, mean over all "
        f"children: importance {rand['pruned_mean_bpb']:.4f}, random "
        f"{rand['random_pruned_mean_bpb']:.4f} bpb)\n"
    )
    print("| child | as pruned | random, as pruned | distilled | random, distilled |")
    print("|---|---:|---:|---:|---:|")
    for row in rand["rows"]:
        print(f"| {row['child']} | {row['pruned_bpb']:.4f} | {row['random_pruned_bpb']:.4f} | "
              f"{row['distilled_bpb']:.4f} | {row['random_distilled_bpb']:.4f} |")  # fmt: skip
    t = report["timing"]
    print(f"\nseconds per step (one thread): ladder {t['ladder_seconds_per_step']:.3f}, "
          f"distill {t['truth_seconds_per_step']:.3f}, scratch "
          f"{t['scratch_seconds_per_step']:.3f}")  # fmt: skip
