"""Fitting the calibrated predictor on measured rows and scoring it on the held-out ones: the
calibration file's content, and the summary `nas.calibrate` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas.calibrate.repeatability import repeatability, repeats
from nas.calibrate.runtimes import version_key
from nas.errors import NasError
from nas.files import atomic_write
from nas.hardware import HardwareProfile
from predictors.accuracy import accuracy
from predictors.calibrated import QUANTITIES, CalibratedPredictor, fit_rows, row_candidate, to_json
from predictors.conditions import activations_of, decode_form_of, moe_kernel_of


def _has_long(rows: list[dict[str, Any]]) -> bool:
    return bool(rows and rows[0].get("decode_long_ms"))


def fit_and_score(
    rows: list[dict[str, Any]], hardware: HardwareProfile, source: dict[str, Any]
) -> dict[str, Any]:
    """Fit on the `fit` rows, score the `heldout` rows; the calibration file's content."""
    fit = [r for r in rows if r["split"] == "fit"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    if len(fit) < 6:
        raise NasError(f"need at least 6 measured fit points to calibrate, got {len(fit)}")
    fits = fit_rows(fit, hardware)
    calibration: dict[str, Any] = {
        "hardware": hardware.name,
        "calibrated": True,
        "conditions": {
            "context_len": hardware.deploy.context_len,
            "prompt_len": hardware.deploy.prompt_len,
            # decode was also timed at this context: the KV coefficient is fitted across both
            "long_context_len": fit[0].get("long_context_len") if _has_long(fit) else None,
            "threads": rows[0]["threads"],
            "activations": activations_of(hardware),
            "runtime": hardware.runtime,
            "moe_kernel": moe_kernel_of(hardware.runtime),
            "decode_form": decode_form_of(hardware.runtime),
        },
        "provenance": {
            **source,
            "n_points": len(fit),
            "n_heldout": len(heldout),
            "threads": rows[0]["threads"],
            hardware.runtime: version_key(rows[0]),
        },
        **to_json(fits),
    }
    calibration["repeatability"] = repeatability(rows)
    if heldout:
        predictor = CalibratedPredictor(hardware, calibration)
        calibration["heldout"] = {
            q: accuracy(
                [predictor.predict(row_candidate(r))[q].mean for r in heldout],
                [float(r[q]) for r in heldout],
            )
            for q in QUANTITIES
        }
        if long := [r for r in heldout if r.get("decode_long_ms")]:
            long_hw = hardware.at_context(hardware.deploy.long_context)
            at_long = CalibratedPredictor(long_hw, calibration)
            calibration["heldout"]["decode_ms_long"] = accuracy(
                [at_long.predict(row_candidate(r))["decode_ms"].mean for r in long],
                [float(r["decode_long_ms"]) for r in long],
            )
        # The same figures on the graphs whose rounds agree within ±5%: a predictor cannot be
        # held to ±10% against a number that does not itself repeat.
        calibration["heldout_repeating"] = {
            q: accuracy(
                [predictor.predict(row_candidate(r))[q].mean for r in steady],
                [float(r[q]) for r in steady],
            )
            for q in ("decode_ms", "prefill_ms")
            if len(steady := [r for r in heldout if repeats(r, q, 0.05)]) >= 2
        }
    return calibration


def write_calibration(calibration: dict[str, Any], path: Path) -> None:
    """Written whole or not at all: a full disk never leaves a truncated calibration."""
    atomic_write(path, json.dumps(calibration, indent=2) + "\n", setting="calibration")


def summary(calibration: dict[str, Any]) -> str:
    runtime = calibration["conditions"].get("runtime", "onnxruntime")
    lines = [
        f"calibration of {calibration['hardware']} in {runtime}: {CalibratedPredictor.__name__}"
    ]
    for q in QUANTITIES:
        coef = ", ".join(
            f"{n}={c:.4g}"
            for n, c in zip(calibration[q]["features"], calibration[q]["coef"], strict=True)
        )
        line = f"  {q:<10} {coef}; leave-one-out rel. error {calibration[q]['rel_std']:.1%}"
        if "heldout" in calibration:
            h = calibration["heldout"][q]
            line += (
                f"\n             held-out n={h['n']}: within ±10% {h['within_10pct']:.0%}, "
                f"MAPE {h['mape']:.1%}, Spearman {h['spearman']:.3f}"
            )
        steady = calibration.get("heldout_repeating", {}).get(q)
        rep = calibration.get("repeatability", {}).get(q)
        if rep:
            line += (
                f"\n             rounds repeat within ±5% for {rep['within_5pct']:.0%} of graphs, "
                f"±10% for {rep['within_10pct']:.0%}"
            )
        if steady:
            line += (
                f"; on held-out graphs that repeat within ±5% (n={steady['n']}): within ±10% "
                f"{steady['within_10pct']:.0%}, Spearman {steady['spearman']:.3f}"
            )
        lines.append(line)
    long = calibration.get("heldout", {}).get("decode_ms_long")
    if long:
        lines.append(
            f"  decode at {calibration['conditions']['long_context_len']} tokens of context, "
            f"held-out n={long['n']}: within ±10% {long['within_10pct']:.0%}, "
            f"MAPE {long['mape']:.1%}, Spearman {long['spearman']:.3f}"
        )
    noisy = calibration.get("repeatability", {}).get("noisy_rounds")
    if noisy:
        lines.append(f"  measured while the machine was not quiet in round(s) {noisy}")
    return "\n".join(lines)
