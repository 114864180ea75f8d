"""The fidelity bench's parts beyond the main table, and its printed report."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from nas.arch import Candidate
from nas.bench._grading import grade
from nas.bench._runs import describe
from nas.bench.fidelity import (
    Bench,
    _complete,
    fidelity_part,
    late_slope_scores,
    target_subset,
)
from nas.fidelity import late_slope
from nas.fidelity.target import extrapolate
from nas.objectives.cheap import CheapObjectives
from nas.objectives.pareto import IncrementalFront
from predictors.factory import latency_predictor, memory_predictor


def target_part(bench: Bench) -> dict[str, Any] | None:
    """The long target (see the module doc of nas.bench.fidelity); None while runs are missing."""
    opts = bench.opts
    index = target_subset(bench.archs, opts["target_archs"], opts["target_from"])
    archs = [bench.archs[i] for i in index]
    truth_seeds = bench.truth(archs, opts["target_factor"], opts["target_seeds"])
    ladders = bench.ladders("standard", opts["ladder_seeds"], bench.rungs.count, archs)
    if not _complete(truth_seeds, ladders):
        return None
    truth = list(np.mean(truth_seeds, axis=0))
    lad = np.array(ladders, dtype=float)
    tokens = bench.short.batch_size * bench.short.seq_len
    curves = [
        [(bench.rungs.total(k) * tokens, float(lad[0, i, k])) for k in range(lad.shape[2])]
        for i in range(len(archs))
    ]
    at = bench.short.steps * opts["target_factor"] * tokens
    values, claimed_sd, family = extrapolate(curves, at)
    offset = lad[:, :, -1].mean(axis=0) - lad[0, :, -1]
    extrapolated = list(np.array(values) + offset)
    top = list(lad[:, :, -1].mean(axis=0))
    prior = late_slope_scores(bench, archs, top, at / tokens)
    errors = np.array(extrapolated) - np.array(truth)
    return {
        "architectures": len(archs),
        "truth_steps": bench.short.steps * opts["target_factor"],
        "truth_seeds": opts["target_seeds"],
        "extrapolated": grade(extrapolated, truth),
        "top_rung_measured": grade(top, truth),
        "late-slope prior": grade(prior["values"], truth),
        "late-slope rows, leave-one-out": _rows_loo(),
        "params proxy": grade([-float(np.log10(a.non_embedding_params)) for a in archs], truth),
        "late_slope": {
            **prior,
            **_errors(prior["values"], truth),
            "rows": [
                {
                    "arch": describe(a),
                    "layers": a.n_layers,
                    "d_model": a.d_model,
                    "n": a.non_embedding_params,
                    "top_steps": bench.rungs.total(bench.rungs.top),
                    "top_bpb": [round(float(b), 4) for b in lad[:, i, -1]],
                    "long_steps": bench.short.steps * opts["target_factor"],
                    "long_bpb": [round(float(s[i]), 4) for s in truth_seeds],
                }
                for i, a in enumerate(archs)
            ],
        },
        "extrapolation_rms_error_bpb": float(np.sqrt(np.mean(errors**2))),
        "extrapolation_bias_bpb": float(errors.mean()),
        "claimed_sd_bpb": claimed_sd,
        "beta": family.beta,
        "front_depths": _depth_mix(
            bench,
            archs,
            {
                "truth": truth,
                "late-slope prior": prior["values"],
                "extrapolated": extrapolated,
                "top rung": top,
            },
        ),
    }


def _rows_loo() -> dict[str, Any]:
    """The prior's own rows, each predicted by the prior fitted without it (shipped data only)."""
    rows = late_slope.read_rows()
    predicted = late_slope.leave_one_out(rows)
    truth = [r.long_bpb for r in rows]
    return {"rows": len(rows), **grade(predicted, truth), **_errors(predicted, truth)}


def _errors(values: list[float], truth: list[float]) -> dict[str, float]:
    errors = np.array(values) - np.array(truth)
    return {"rms_error_bpb": float(np.sqrt(np.mean(errors**2))), "bias_bpb": float(errors.mean())}


def _depth_mix(bench: Bench, archs: list, qualities: dict[str, list[float]]) -> dict[str, Any]:
    """The layers of the front's members under each quality (decode, memory on the device)."""
    hardware = bench.cfg.hardware
    cheap = CheapObjectives(latency_predictor(hardware), memory_predictor(hardware))
    costs = [cheap(Candidate(a)) for a in archs]
    mix = {}
    for name, quality in qualities.items():
        front = IncrementalFront()
        for i, (q, c) in enumerate(zip(quality, costs, strict=True)):
            front.add((q, c.decode.mean, c.memory.mean), i)
        mix[name] = sorted(archs[i].n_layers for i in front.items)
    return mix


def run_parts(bench: Bench, opts: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    parts = ["fidelity", "target", "e2e"] if opts["part"] == "all" else [opts["part"]]
    report: dict[str, Any] = {}
    if "fidelity" in parts:
        report["fidelity"] = fidelity_part(bench)
        if report["fidelity"]:
            print_fidelity(report["fidelity"])
    if "target" in parts:
        report["target"] = target_part(bench)
        if report["target"]:
            print_target(report["target"])
    if "e2e" in parts:
        from nas.bench._e2e import e2e_part

        report["e2e"] = e2e_part(bench, opts, overrides)
    return {k: v for k, v in report.items() if v is not None}


def print_fidelity(table: dict[str, Any]) -> None:
    truth = table["truth"]
    print(
        f"\nfidelity on {len(table['architectures'])} architectures; truth {truth['steps']} "
        f"steps x {truth['seeds']} seeds (cosine, standard); rungs {table['rung_steps']}"
    )
    print(
        f"noise ceiling: tau between truth seeds {truth['tau_between_seeds']:.3f} (min "
        f"{truth['tau_between_seeds_min']:.3f}), one seed vs the others' mean "
        f"{truth['tau_seed_vs_rest']:.3f}; seed x architecture sd "
        f"{truth['seed_interaction_sd']:.4f} bpb"
    )
    print(f"{'score':<58} {'tau':>6} {'top5':>5} {'regret':>8} {'regret@limit':>13}")
    limited = table["binding_limit"]["regret_bpb"]
    for name, g in table["grades"].items():
        print(
            f"{name:<58} {g['kendall_tau']:>6.3f} {g['top5']:>5} {g['regret_bpb']:>8.4f} "
            f"{limited[name]:>13.4f}"
        )
    carry = table["carry_on"]
    print(
        f"carrying on through the rungs: {carry['carry_on_steps']} steps vs retraining "
        f"{carry['retrain_steps']}: {carry['saved_at_top']:.0%} saved to reach the top rung"
    )


def print_target(table: dict[str, Any]) -> None:
    print(
        f"\ntarget check: {table['architectures']} architectures, truth "
        f"{table['truth_steps']} steps x {table['truth_seeds']} seeds"
    )
    for name in ("late-slope prior", "extrapolated", "top_rung_measured", "params proxy"):
        g = table[name]
        print(f"  {name:<20} tau {g['kendall_tau']:.3f}, top-5 {g['top5']}, regret "
              f"{g['regret_bpb']:.4f}")  # fmt: skip
    print(
        f"  extrapolation error: rms {table['extrapolation_rms_error_bpb']:.4f} bpb, bias "
        f"{table['extrapolation_bias_bpb']:+.4f}; claimed sd {table['claimed_sd_bpb']:.4f}; "
        f"beta {table['beta']:.2f}"
    )
    prior = table["late_slope"]
    print(
        f"  late-slope prior: rms {prior['rms_error_bpb']:.4f} bpb, bias {prior['bias_bpb']:+.4f}; "
        f"claimed sd {prior['claimed_sd_bpb']:.4f}; {prior['held_out']} of "
        f"{table['architectures']} not among its {prior['fitted_rows']} rows (the others graded "
        "leave-one-out)"
    )
    rows = table["late-slope rows, leave-one-out"]
    print(
        f"  the prior's own {rows['rows']} rows, each left out of its fit: tau "
        f"{rows['kendall_tau']:.3f}, rms {rows['rms_error_bpb']:.4f} bpb, top-5 {rows['top5']}"
    )
    print(f"  front depths: {table['front_depths']}")
    print("  rows for nas/fidelity/late_slope.yaml:")
    for row in prior["rows"]:
        print(f"  - {json.dumps(row)}")
