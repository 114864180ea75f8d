"""The uncalibrated device priors against published decode speeds of public models.

    python -m nas.bench priors [data=predictors/published/decode_speeds.yaml] [min_cases=3]

For every published case (device, runtime, model shape, bits, context, tokens/s, source URL:
predictors/published/decode_speeds.yaml) the profile's roofline prior predicts decode at the
case's own context, and the bench prints predicted / published milliseconds per token.

Fitting: where a (profile, runtime) pair has at least `min_cases` cases, the prior's one free
memory-side number, `bandwidth_efficiency`, is fitted to them (decode at batch 1 is memory-bound:
ms = bytes / (bandwidth x efficiency) + fixed overheads), and scored leave-one-out: each case is
predicted with the median efficiency the *other* cases imply. The fitted value is printed, not
written into the profile, when the published runtime is not the one the profile prices (every
profile prices ONNX Runtime; the published figures are llama.cpp's and MLC's): such a fit says
how far the prior is from that runtime on that device, not what ONNX Runtime would reach.
Writes `<runs_dir>/bench/priors.json`.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from nas.arch import Candidate, CompressionConfig, arch_from_hf
from nas.bench import split_options
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.files import atomic_write
from nas.hardware import HardwareProfile
from predictors.roofline import RooflineLatency

DATA = Path(__file__).resolve().parents[2] / "predictors" / "published" / "decode_speeds.yaml"
BENCH_KEYS = {"data": str(DATA), "min_cases": 3}
PUBLISHED_FLOAT_BYTES = 2
CASE_KEYS = ("hardware", "device", "runtime", "model", "bits", "context", "decode_tok_s", "source")


def load_cases(path: Path) -> list[dict[str, Any]]:
    """The published cases, each checked for the keys the bench needs."""
    try:
        cases = yaml.safe_load(path.read_text())["cases"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise NasError(f"cannot read published speeds {path}: {err}") from None
    for i, case in enumerate(cases):
        missing = [k for k in (*CASE_KEYS, "config") if k not in case]
        if missing:
            raise NasError(f"{path}: case {i + 1} lacks {', '.join(missing)}")
    return cases


def candidate_of(case: dict[str, Any]) -> Candidate:
    bits = int(case["bits"])
    group = 32 if bits < 16 else 0  # GGUF's Q4_0/Q8_0 blocks are 32 weights
    return Candidate(arch_from_hf(case["config"]), CompressionConfig(bits, group, 0.0, "none"))


def decode_parts(case: dict[str, Any], hardware: HardwareProfile) -> dict[str, float]:
    """The prior's decode ms and its two parts: the memory-bound roofline at full bandwidth
    (efficiency 1, so `memory / efficiency` is the roofline term) and the fixed overheads."""
    hw = hardware.at_context(int(case["context"]))
    cand = candidate_of(case)

    def roofline(profile: HardwareProfile) -> RooflineLatency:
        # A published file keeps its float parts (embeddings, head, KV cache) at 16 bits, or
        # smaller (GGUF's quantized embeddings), never at the fp32 of the engine's CPU export.
        return RooflineLatency(profile, float_width=PUBLISHED_FLOAT_BYTES)

    prior_ms = roofline(hw).decode_ms(cand)
    no_overheads = dataclasses.replace(hw.prior, per_token_ms=0.0, per_layer_ms=0.0)
    full = dataclasses.replace(
        hw, prior=dataclasses.replace(no_overheads, bandwidth_efficiency=1.0)
    )
    roofline_ms = roofline(dataclasses.replace(hw, prior=no_overheads)).decode_ms(cand)
    return {
        "prior_ms": prior_ms,
        "memory_ms_at_full_bandwidth": roofline(full).decode_ms(cand),
        "roofline_ms": roofline_ms,
        "fixed_ms": prior_ms - roofline_ms,
    }


def implied_efficiency(parts: dict[str, float], published_ms: float) -> float | None:
    """The bandwidth efficiency under which the prior would give `published_ms` (None when the
    overheads alone exceed it)."""
    left = published_ms - parts["fixed_ms"]
    return parts["memory_ms_at_full_bandwidth"] / left if left > 0 else None


def leave_one_out(rows: list[dict[str, Any]]) -> list[float | None]:
    """Each row's relative error when predicted with the median efficiency of the others."""
    errors: list[float | None] = []
    for i, row in enumerate(rows):
        others = [r["implied_efficiency"] for j, r in enumerate(rows) if j != i]
        others = [e for e in others if e is not None]
        if not others:
            errors.append(None)
            continue
        eff = statistics.median(others)
        predicted = row["memory_ms_at_full_bandwidth"] / eff + row["fixed_ms"]
        errors.append(predicted / row["published_ms"] - 1.0)
    return errors


def score(cases: list[dict[str, Any]], min_cases: int) -> dict[str, Any]:
    profiles: dict[str, HardwareProfile] = {}
    rows = []
    for case in cases:
        name = case["hardware"]
        if name not in profiles:
            profiles[name] = load_settings([f"hardware={name}", "budget=smoke"]).hardware
        parts = decode_parts(case, profiles[name])
        published_ms = 1000.0 / float(case["decode_tok_s"])
        rows.append(
            {
                **{k: case[k] for k in CASE_KEYS},
                "format": case.get("format", ""),
                "published_ms": published_ms,
                **parts,
                "ratio": parts["prior_ms"] / published_ms,
                "prior_efficiency": profiles[name].prior.bandwidth_efficiency,
                "implied_efficiency": implied_efficiency(parts, published_ms),
            }
        )
    groups: dict[str, Any] = {}
    for key in sorted({(r["hardware"], r["runtime"].split(" (")[0]) for r in rows}):
        members = [r for r in rows if (r["hardware"], r["runtime"].split(" (")[0]) == key]
        group: dict[str, Any] = {
            "hardware": key[0],
            "runtime": key[1],
            "n": len(members),
            "median_ratio": statistics.median(r["ratio"] for r in members),
            "prior_efficiency": members[0]["prior_efficiency"],
            "prior_median_abs_error": statistics.median(abs(r["ratio"] - 1) for r in members),
        }
        implied = [r["implied_efficiency"] for r in members if r["implied_efficiency"]]
        if len(members) >= min_cases and implied:
            loo = [e for e in leave_one_out(members) if e is not None]
            group |= {
                "fitted_efficiency": statistics.median(implied),
                "implied_range": [min(implied), max(implied)],
                "loo_median_abs_error": statistics.median(abs(e) for e in loo),
                "loo_errors": loo,
                "status": f"fitted to published figures ({key[1]})",
            }
        else:
            group["status"] = f"spec prior (fewer than {min_cases} published cases to fit)"
        groups["/".join(key)] = group
    return {"cases": rows, "groups": groups}


def print_report(report: dict[str, Any]) -> None:
    print(f"{'profile':<17} {'runtime':<26} {'model':<26} {'bits':>4} {'ctx':>5} "
          f"{'published':>10} {'prior':>9} {'ratio':>6}")  # fmt: skip
    for r in report["cases"]:
        print(
            f"{r['hardware']:<17} {r['runtime'][:26]:<26} {r['model'][:26]:<26} {r['bits']:>4} "
            f"{r['context']:>5} {r['published_ms']:>8.1f}ms {r['prior_ms']:>7.1f}ms "
            f"{r['ratio']:>6.2f}"
        )
    print("\nratio = prior's ms per token / published ms per token (>1: the prior is too slow)")
    for name, g in report["groups"].items():
        line = (
            f"{name}: {g['n']} case(s), median ratio {g['median_ratio']:.2f} "
            f"(prior bandwidth_efficiency {g['prior_efficiency']:.2f}, median |error| "
            f"{g['prior_median_abs_error']:.0%})"
        )
        if "fitted_efficiency" in g:
            lo, hi = g["implied_range"]
            line += (
                f"; fitted {g['fitted_efficiency']:.2f} (cases imply {lo:.2f}-{hi:.2f}), "
                f"leave-one-out median |error| {g['loo_median_abs_error']:.0%}"
            )
        print(f"  {line}\n    status: {g['status']}")


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, BENCH_KEYS)
    cases = load_cases(Path(opts["data"]))
    report = score(cases, int(opts["min_cases"]))
    print_report(report)
    runs_dir = Path(load_settings([*overrides, "budget=smoke"]).runs_dir)
    out = runs_dir / "bench" / "priors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(report, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0
