"""The calibration modes behind `python -m nas.calibrate`: measure here, write a bundle for a device
out of reach, ingest a device's results; each fits and scores the calibrated predictor."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, CompressionConfig
from nas.calibrate.args import CalibrateArgs
from nas.calibrate.args import parse_args as parse_args  # re-exported: light module
from nas.calibrate.calibration_set import (
    RUNS,
    CalibrationPoint,
    cache_folder,
    calibration_set,
    export_long_decode,
    export_point,
    measure_rows,
    read_rows,
    write_rows,
)
from nas.calibrate.fit import fit_and_score
from nas.calibrate.runtimes import calibration_runtime
from nas.errors import NasError
from nas.files import check_writable
from nas.hardware import DECODE_FORM_BEFORE, HardwareProfile, runtime_suffix
from nas.onnx.quiet import Quiet
from predictors.calibrated import QUANTITIES
from predictors.conditions import activations_of, decode_form_of, moe_kernel_of
from predictors.machine import cpu_model, this_machine

log = logging.getLogger("nas.calibrate")


# --- modes ---------------------------------------------------------------------------------------
def measured_rows(
    args: CalibrateArgs, hardware: HardwareProfile
) -> tuple[list[dict[str, Any]], Path]:
    """The calibration set's measurements: reused from the store when complete, else measured."""
    points = _points(args)
    runs_dir = Path(args.runs_dir)
    check_writable(runs_dir, "runs_dir")
    store = measurements_path(runs_dir, hardware)
    wanted = {p.id for p in points}
    rows = _stored_rows(store) if args.reuse and store.exists() else []
    # Rows timed in another int8/int4 format, runtime, expert kernel, cache form or thread count,
    # or without decode at this long context (older versions), are not what this calibration
    # needs.
    same_format = all(
        r.get("threads") == args.threads_for(hardware)
        and r.get("activations", "float") == activations_of(hardware)
        and r.get("long_context_len") == hardware.deploy.long_context
        and r.get("runtime", "onnxruntime") == hardware.runtime
        and r.get("moe_kernel", "gathered") == moe_kernel_of(hardware.runtime)
        and r.get("decode_form", DECODE_FORM_BEFORE) == decode_form_of(hardware.runtime)
        for r in rows
    )
    if {r["id"] for r in rows} != wanted or not same_format:
        noise = Quiet.now().noise(args.threads_for(hardware))
        if noise and args.quiet == "refuse":
            raise NasError(
                f"this machine is not quiet enough to time on: {noise}; wait until it is, or "
                "pass quiet=flag to measure anyway with the noise recorded"
            )
        if noise:
            log.warning("measuring on a machine that is not quiet: %s", noise)
        rows = measure_rows(
            points,
            hardware,
            cache_folder(runs_dir, hardware),
            rounds=args.rounds,
            threads=args.threads_for(hardware),
        )
        write_rows(rows, store)
    return rows, store


def _stored_rows(store: Path) -> list[dict[str, Any]]:
    """Measurements kept from an earlier run; a damaged file is measured again, not fatal."""
    try:
        rows = read_rows(store)
    except (OSError, ValueError):
        rows = []
    if all(isinstance(r, dict) and "id" in r for r in rows):
        return rows
    log.warning("%s cannot be read; measuring again", store)
    return []


TARGETS = {  # what each `target=` fits, in words
    "p10": "the fastest round's 10th-percentile run",
    "best": "the fastest round's median run",
    "median": "the median over rounds",
}


def with_target(rows: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Rows whose decode_ms/prefill_ms are the `target` statistic over measurement rounds.

    "best": the fastest round's median run; "p10": the fastest round's 10th-percentile run, whose
    rounds are then also what the repeatability figure judges (`{phase}_rounds_ms`; the rounds'
    medians move to `{phase}_median_rounds_ms`). On shared VMs the slowdowns come and go within a
    round (blocks of 40 runs in one process differed by 13-54%), so a low percentile of each
    round repeats better than its median, and a fit on it predicted other rounds' medians better
    on two fresh draws (BENCHMARKS.md, 2026-12-07). Device bundles give one figure per graph and
    are left as they are."""
    if target == "median":
        return rows
    out = []
    for row in rows:
        row = dict(row)
        for phase in ("decode", "prefill", "decode_long"):
            best = row.get(f"{phase}_best_ms")
            p10_rounds = row.get(f"{phase}_p10_rounds_ms")
            if best is None or (target == "p10" and not p10_rounds):
                continue  # results with one figure per graph (device bundles)
            row[f"{phase}_median_ms"] = row[f"{phase}_ms"]
            row[f"{phase}_ms"] = min(p10_rounds) if target == "p10" else best
            if target == "p10":
                row[f"{phase}_median_rounds_ms"] = row[f"{phase}_rounds_ms"]
                row[f"{phase}_rounds_ms"] = p10_rounds
        out.append(row)
    return out


def run_measure(args: CalibrateArgs, hardware: HardwareProfile) -> dict[str, Any]:
    rows, store = measured_rows(args, hardware)
    target = args.target
    rows = with_target(rows, target)
    source = {
        "device": f"{hardware.name} (measured here)",
        "cpu_model": cpu_model(),
        "machine": this_machine(),  # the predictor warns when it prices another machine
        # the day the graphs were timed (reused measurements keep theirs), and the day of the fit
        "date": max(str(r.get("date", "")) for r in rows) or dt.date.today().isoformat(),
        "fitted": dt.date.today().isoformat(),
        "command": _command(hardware),
        "measurements": str(store),
        "target": target,
        "rounds": len(rows[0].get("decode_rounds_ms", [])),
    }
    return fit_and_score(rows, hardware, source)


def _points(args: CalibrateArgs) -> list[CalibrationPoint]:
    return calibration_set(n_fit=args.n_fit, n_heldout=args.n_heldout, seed=args.seed)


def run_bundle(
    args: CalibrateArgs, hardware: HardwareProfile, points: list[CalibrationPoint] | None = None
) -> Path:
    """Write the on-device bundle; returns its folder."""
    if not args.out:
        raise NasError("mode=bundle needs out=DIR (the folder to copy to the device)")
    out = Path(args.out)
    check_writable(out, "out")
    points = points if points is not None else _points(args)
    runtime = calibration_runtime(hardware.runtime)
    cache = cache_folder(Path(args.runs_dir), hardware)
    (out / "models").mkdir(parents=True, exist_ok=True)
    entries = []
    for point in points:
        exported = {
            **export_point(point, hardware, cache),
            "decode_long": export_long_decode(point, hardware, cache),
        }
        files = {}
        for phase, path in exported.items():
            name = f"models/{point.id}-{phase}{runtime.suffix}"
            shutil.copyfile(path, out / name)
            files[phase] = name
        entries.append(
            {
                "id": point.id,
                "split": point.split,
                "arch": point.candidate.arch.to_dict(),
                "compression": point.candidate.compression.to_dict(),
                "files": files,
            }
        )
    manifest = {
        "device": hardware.name,
        "runtime": hardware.runtime,
        "context_len": hardware.deploy.context_len,
        "long_context_len": hardware.deploy.long_context,
        "prompt_len": hardware.deploy.prompt_len,
        "threads": args.threads_for(hardware),
        "rounds": args.rounds,
        "activations": activations_of(hardware),
        "decode_form": decode_form_of(hardware.runtime),
        "points": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if hardware.runtime == "onnxruntime":  # standalone: numpy and onnxruntime only
        shutil.copyfile(Path(__file__).parent.parent / "onnx" / "measure.py", out / "measure.py")
        (out / "perf_test.sh").write_text(_perf_test_lines(manifest))
    else:
        (out / "executor_runner.sh").write_text(_executor_runner_lines(manifest))
    shutil.copyfile(Path(__file__).with_name("bundle_runner.py"), out / "run_bundle.py")
    return out


def _command(hardware: HardwareProfile) -> str:
    runtime = "" if hardware.runtime == "onnxruntime" else f" runtime={hardware.runtime}"
    return f"python -m nas.calibrate hardware={hardware.name}{runtime}"


def measurements_path(runs_dir: Path, hardware: HardwareProfile) -> Path:
    """Where a device's measurements in its runtime are kept between runs."""
    suffix = runtime_suffix(hardware.runtime)
    return runs_dir / "calibration" / hardware.name / f"measurements{suffix}.jsonl"


def _adb_lines(
    manifest: dict[str, Any], header: list[str], command: Callable[[int, int, str], str]
) -> str:
    """A shell script timing every model file of the bundle through adb, for phones without
    Python (results copied by hand): `command(threads, runs, device path)` times one file."""
    lines = ["#!/bin/sh", *header]
    for entry in manifest["points"]:
        for phase, name in entry["files"].items():
            timed = command(manifest["threads"], RUNS[phase], f"/data/local/tmp/nas/{name}")
            lines.append(f"{timed}  # {entry['id']} {phase}")
    return "\n".join(lines) + "\n"


def _executor_runner_lines(manifest: dict[str, Any]) -> str:
    """ExecuTorch's C++ runner through adb."""
    header = [
        "# Build ExecuTorch's executor_runner with the XNNPACK backend and the LLM custom ops",
        "# (docs.pytorch.org/executorch/stable/backends-xnnpack.html, with",
        "# -DEXECUTORCH_BUILD_XNNPACK=ON",
        "# -DEXECUTORCH_BUILD_KERNELS_LLM=ON, linking custom_ops: decode programs hold their",
        "# KV cache and use llama::update_cache and llama::custom_sdpa), then push it and models:",
        "#   adb push executor_runner /data/local/tmp/",
        "#   adb push models /data/local/tmp/nas/models",
        "# Each line logs 'N inference took X ms, avg Y ms': copy each avg into results.jsonl",
        "# rows (id, device, decode_ms, prefill_ms, decode_long_ms, long_context_len, memory_mb).",
    ]
    return _adb_lines(
        manifest,
        header,
        lambda threads, runs, path: (
            f"adb shell /data/local/tmp/executor_runner --cpu_threads={threads} "
            f"--num_executions={runs} --model_path={path}"
        ),
    )


def _perf_test_lines(manifest: dict[str, Any]) -> str:
    """`onnxruntime_perf_test` through adb (100 runs of every file: its median is read)."""
    header = [
        "# Push the bundle, then time each graph with ONNX Runtime's perf tool on the device:",
        "#   adb push models /data/local/tmp/nas/models",
        "# Copy each 'Median' latency (ms) into results.jsonl rows (see README in manifest).",
    ]
    return _adb_lines(
        manifest,
        header,
        lambda threads, _runs, path: (
            f"adb shell /data/local/tmp/onnxruntime_perf_test -e cpu -x {threads} -y 1 "
            f"-r 100 -I -m times {path}"
        ),
    )


def validate_results(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Join device results with the manifest; a `NasError` names the first bad row."""
    points = {p["id"]: p for p in manifest["points"]}
    joined, seen = [], set()
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise NasError(f"results row {number} is not a JSON object: {str(row)[:60]}")
        where = f"results row {number} (id {row.get('id', '?')!r})"
        if row.get("id") not in points:
            raise NasError(f"{where}: unknown model id; ids come from the bundle's manifest.json")
        if row.get("device") != manifest["device"]:
            raise NasError(
                f"{where}: device {row.get('device')!r} but the bundle is for "
                f"{manifest['device']!r}; ingest it with hardware={row.get('device')}"
            )
        for key in QUANTITIES:
            if not _positive(row.get(key)):
                raise NasError(f"{where}: {key} must be a positive number, got {row.get(key)!r}")
        if "threads" in row and not (_positive(row["threads"]) and isinstance(row["threads"], int)):
            raise NasError(f"{where}: threads must be an integer >= 1, got {row['threads']!r}")
        if row["id"] in seen:
            raise NasError(f"{where}: measured twice; keep one row per model id")
        seen.add(row["id"])
        point = points[row["id"]]
        joined.append(
            {
                **row,
                "split": point["split"],
                "arch": point["arch"],
                "compression": point["compression"],
                "threads": row.get("threads", manifest["threads"]),
            }
        )
    if not joined:
        raise NasError("the results file holds no rows")
    return joined


def _positive(value: Any) -> bool:
    """A finite number > 0 (JSON lets NaN and Infinity through; a time is neither)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def read_manifest(path: Path) -> dict[str, Any]:
    """A bundle's manifest.json, checked: a `NasError` of one line for anything else."""
    again = "copy manifest.json from the bundle again, or pass manifest=PATH"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NasError(f"{path} is not JSON ({str(err).splitlines()[0]}); {again}") from None
    points = manifest.get("points") if isinstance(manifest, dict) else None
    if not (
        isinstance(points, list)
        and isinstance(manifest.get("device"), str)
        and isinstance(manifest.get("threads"), int)
        and all(
            isinstance(p, dict) and {"id", "split", "arch", "compression"} <= p.keys()
            for p in points
        )
    ):
        raise NasError(
            f"{path} is not a bundle manifest (device, threads, points with id, split, arch, "
            f"compression); {again}"
        )
    for point in points:
        try:
            ArchConfig.from_dict(point["arch"])
            CompressionConfig(**point["compression"])
        except (TypeError, ValueError, AttributeError) as err:
            raise NasError(
                f"{path}: point {point['id']!r} is no valid model ({err}); {again}"
            ) from None
    return manifest


def run_ingest(args: CalibrateArgs, hardware: HardwareProfile) -> dict[str, Any]:
    if not args.results:
        raise NasError("mode=ingest needs results=FILE (the results.jsonl the device wrote)")
    results = Path(args.results)
    manifest_path = Path(args.manifest or results.parent / "manifest.json")
    for path in (results, manifest_path):
        if not path.is_file():
            raise NasError(f"no such file {path}; pass results=FILE (and manifest=PATH)")
    manifest = read_manifest(manifest_path)
    if manifest["device"] != hardware.name:
        raise NasError(
            f"the bundle in {manifest_path} is for {manifest['device']}, not {hardware.name}"
        )
    bundled_runtime = manifest.get("runtime", "onnxruntime")
    if bundled_runtime != hardware.runtime:
        raise NasError(
            f"the bundle in {manifest_path} holds {bundled_runtime} models; ingest it with "
            f"runtime={bundled_runtime}, or write a {hardware.runtime} bundle with mode=bundle"
        )
    bundled = manifest.get("activations", "float")
    if bundled != activations_of(hardware):
        raise NasError(
            f"the bundle in {manifest_path} holds int8/int4 graphs with {bundled} activations, "
            f"but {hardware.name}'s runtime runs them with {activations_of(hardware)} ones; "
            "write a new bundle with mode=bundle"
        )
    form = manifest.get("decode_form", DECODE_FORM_BEFORE)
    if form != decode_form_of(hardware.runtime):
        raise NasError(
            f"the bundle in {manifest_path} holds decode programs with the KV cache as {form}, "
            f"but this version's hold it as {decode_form_of(hardware.runtime)}; write a new "
            "bundle with mode=bundle"
        )
    try:
        raw = read_rows(results)
    except json.JSONDecodeError as err:
        raise NasError(f"{results} line {err.lineno} is not JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise NasError(
            f"{results} is not UTF-8 text ({err.reason}); give the device's results.jsonl"
        ) from None
    rows = validate_results(raw, manifest)
    source = {
        "device": f"{hardware.name} (bundle results)",
        "cpu_model": str(rows[0].get("cpu_model", "unknown")),
        "date": str(rows[0].get("date", dt.date.today().isoformat())),
        "command": f"{_command(hardware)} mode=ingest",
        "measurements": str(results),
    }
    return fit_and_score(rows, hardware, source)
