"""`python -m nas.calibrate hardware=H`: measure a device with ONNX Runtime and fit its predictor.

Modes:
  mode=measure (default)   export the calibration set, time it here (decode and prefill, separate
                           fresh processes, `rounds` interleaved rounds), fit on the `fit` split,
                           score the held-out split, write predictors/calibrations/<H>.json
  mode=bundle out=DIR      for a device you cannot reach from here: DIR gets the ONNX models, a
                           manifest, the runner (`python run_bundle.py` on the device, needs only
                           numpy + onnxruntime) and the `onnxruntime_perf_test` lines for adb
  mode=ingest results=FILE validate a device's results.jsonl against the bundle's manifest (next
                           to FILE, or manifest=PATH) and fit as mode=measure does
Other keys: rounds=3 n_fit=20 n_heldout=30 seed=0 threads=<profile's> reuse=true (use measurements
already in runs/calibration/<H>/measurements.jsonl) calibration=PATH (where the fit is written)
target=best|median (fit each graph's fastest round, default, or the median over rounds: on a
shared machine other processes only ever slow a run down, so the fastest round is the closest to
the device running the model alone).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
from pathlib import Path
from typing import Any

from nas.calibration_set import (
    CalibrationPoint,
    calibration_set,
    export_point,
    measure_rows,
    read_rows,
    write_rows,
)
from nas.config import as_dict, compose_config
from nas.errors import NasError, run_cli
from nas.hardware import HardwareProfile
from predictors.accuracy import accuracy
from predictors.calibrated import (
    QUANTITIES,
    CalibratedPredictor,
    calibration_path,
    fit_rows,
    row_candidate,
    to_json,
)

OWN_KEYS = {
    "mode", "out", "results", "manifest", "rounds", "n_fit", "n_heldout", "seed", "threads",
    "reuse", "calibration", "runs_dir", "target",
}  # fmt: skip
MODES = ("measure", "bundle", "ingest")


def parse_args(argv: list[str]) -> tuple[dict[str, str], HardwareProfile]:
    """Split this command's own keys from Hydra overrides (the hardware profile)."""
    own, hydra = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise NasError(f"expected KEY=VALUE, got '{arg}'; see python -m nas.calibrate --help")
        (own.__setitem__(key, value) if key in OWN_KEYS else hydra.append(arg))
    mode = own.get("mode", "measure")
    if mode not in MODES:
        raise NasError(f"unknown mode '{mode}'; choose one of: {', '.join(MODES)}")
    cfg = compose_config([*hydra, "budget=smoke"])
    return own, HardwareProfile.from_config(as_dict(cfg.hardware))


def _int(own: dict[str, str], key: str, default: int, minimum: int = 0) -> int:
    try:
        value = int(own.get(key, default))
    except ValueError:
        raise NasError(f"{key} must be an integer, got '{own[key]}'") from None
    if value < minimum:
        raise NasError(f"{key} must be >= {minimum}, got {value}")
    return value


# --- fitting and provenance -----------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
            "threads": rows[0]["threads"],
        },
        "provenance": {
            **source,
            "n_points": len(fit),
            "n_heldout": len(heldout),
            "threads": rows[0]["threads"],
            "onnxruntime": rows[0].get("ort_version", "?"),
        },
        **to_json(fits),
    }
    if heldout:
        predictor = CalibratedPredictor(hardware, calibration)
        calibration["heldout"] = {
            q: accuracy(
                [predictor.predict(row_candidate(r))[q].mean for r in heldout],
                [float(r[q]) for r in heldout],
            )
            for q in QUANTITIES
        }
    return calibration


def write_calibration(calibration: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration, indent=2) + "\n")


def summary(calibration: dict[str, Any]) -> str:
    lines = [f"calibration of {calibration['hardware']}: {CalibratedPredictor.__name__}"]
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
        lines.append(line)
    return "\n".join(lines)


# --- modes ---------------------------------------------------------------------------------------
def measured_rows(
    own: dict[str, str], hardware: HardwareProfile
) -> tuple[list[dict[str, Any]], Path]:
    """The calibration set's measurements: reused from the store when complete, else measured."""
    points = _points(own)
    runs_dir = Path(own.get("runs_dir", "runs"))
    store = runs_dir / "calibration" / hardware.name / "measurements.jsonl"
    wanted = {p.id for p in points}
    rows = read_rows(store) if own.get("reuse", "true") == "true" and store.exists() else []
    if {r["id"] for r in rows} != wanted:
        rows = measure_rows(
            points,
            hardware,
            runs_dir / ".cache" / "onnx",
            rounds=_int(own, "rounds", 3, 1),
            threads=_int(own, "threads", hardware.threads, 1),
        )
        write_rows(rows, store)
    return rows, store


def with_target(rows: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    """Rows whose decode_ms/prefill_ms are the `target` statistic over measurement rounds."""
    if target not in ("best", "median"):
        raise NasError(f"target must be best or median, got '{target}'")
    if target == "median":
        return rows
    out = []
    for row in rows:
        row = dict(row)
        for phase in ("decode", "prefill"):
            best = row.get(f"{phase}_best_ms")
            if best is None:  # results with one figure per graph (device bundles)
                continue
            row[f"{phase}_median_ms"] = row[f"{phase}_ms"]
            row[f"{phase}_ms"] = best
        out.append(row)
    return out


def run_measure(own: dict[str, str], hardware: HardwareProfile) -> dict[str, Any]:
    rows, store = measured_rows(own, hardware)
    target = own.get("target", "best")
    rows = with_target(rows, target)
    source = {
        "device": f"{hardware.name} (measured here)",
        "cpu_model": cpu_model(),
        "date": dt.date.today().isoformat(),
        "command": "python -m nas.calibrate hardware=" + hardware.name,
        "measurements": str(store),
        "target": target,
        "rounds": len(rows[0].get("decode_rounds_ms", [])),
    }
    return fit_and_score(rows, hardware, source)


def _points(own: dict[str, str]) -> list[CalibrationPoint]:
    return calibration_set(
        n_fit=_int(own, "n_fit", 20, 1),
        n_heldout=_int(own, "n_heldout", 30, 0),
        seed=_int(own, "seed", 0),
    )


def run_bundle(
    own: dict[str, str], hardware: HardwareProfile, points: list[CalibrationPoint] | None = None
) -> Path:
    """Write the on-device bundle; returns its folder."""
    if "out" not in own:
        raise NasError("mode=bundle needs out=DIR (the folder to copy to the device)")
    out = Path(own["out"])
    points = points if points is not None else _points(own)
    cache = Path(own.get("runs_dir", "runs")) / ".cache" / "onnx"
    (out / "models").mkdir(parents=True, exist_ok=True)
    entries = []
    for point in points:
        exported = export_point(point, hardware, cache)
        files = {}
        for phase in ("decode", "prefill"):
            name = f"models/{point.id}-{phase}.onnx"
            shutil.copyfile(getattr(exported, phase), out / name)
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
        "context_len": hardware.deploy.context_len,
        "prompt_len": hardware.deploy.prompt_len,
        "threads": _int(own, "threads", hardware.threads, 1),
        "rounds": _int(own, "rounds", 3, 1),
        "points": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name("measure.py"), out / "measure.py")
    shutil.copyfile(Path(__file__).with_name("bundle_runner.py"), out / "run_bundle.py")
    (out / "perf_test.sh").write_text(_perf_test_lines(manifest))
    return out


def _perf_test_lines(manifest: dict[str, Any]) -> str:
    """`onnxruntime_perf_test` through adb, for phones without Python (results by hand)."""
    lines = [
        "#!/bin/sh",
        "# Push the bundle, then time each graph with ONNX Runtime's perf tool on the device:",
        "#   adb push models /data/local/tmp/nas/models",
        "# Copy each 'Median' latency (ms) into results.jsonl rows (see README in manifest).",
    ]
    threads = manifest["threads"]
    for entry in manifest["points"]:
        for phase, name in entry["files"].items():
            lines.append(
                f"adb shell /data/local/tmp/onnxruntime_perf_test -e cpu -x {threads} -y 1 "
                f"-r 100 -I -m times /data/local/tmp/nas/{name}  # {entry['id']} {phase}"
            )
    return "\n".join(lines) + "\n"


def validate_results(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Join device results with the manifest; a `NasError` names the first bad row."""
    points = {p["id"]: p for p in manifest["points"]}
    joined, seen = [], set()
    for number, row in enumerate(rows, start=1):
        where = f"results row {number} (id {row.get('id', '?')!r})"
        if row.get("id") not in points:
            raise NasError(f"{where}: unknown model id; ids come from the bundle's manifest.json")
        if row.get("device") != manifest["device"]:
            raise NasError(
                f"{where}: device {row.get('device')!r} but the bundle is for "
                f"{manifest['device']!r}; ingest it with hardware={row.get('device')}"
            )
        for key in QUANTITIES:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise NasError(f"{where}: {key} must be a positive number, got {value!r}")
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


def run_ingest(own: dict[str, str], hardware: HardwareProfile) -> dict[str, Any]:
    if "results" not in own:
        raise NasError("mode=ingest needs results=FILE (the results.jsonl the device wrote)")
    results = Path(own["results"])
    manifest_path = Path(own.get("manifest", results.parent / "manifest.json"))
    for path in (results, manifest_path):
        if not path.is_file():
            raise NasError(f"no such file {path}; pass results=FILE (and manifest=PATH)")
    manifest = json.loads(manifest_path.read_text())
    if manifest["device"] != hardware.name:
        raise NasError(
            f"the bundle in {manifest_path} is for {manifest['device']}, not {hardware.name}"
        )
    try:
        raw = read_rows(results)
    except json.JSONDecodeError as err:
        raise NasError(f"{results} line {err.lineno} is not JSON: {err.msg}") from None
    rows = validate_results(raw, manifest)
    source = {
        "device": f"{hardware.name} (bundle results)",
        "cpu_model": str(rows[0].get("cpu_model", "unknown")),
        "date": str(rows[0].get("date", dt.date.today().isoformat())),
        "command": f"python -m nas.calibrate hardware={hardware.name} mode=ingest",
        "measurements": str(results),
    }
    return fit_and_score(rows, hardware, source)


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    own, hardware = parse_args(argv)
    mode = own.get("mode", "measure")
    if mode == "bundle":
        out = run_bundle(own, hardware)
        print(f"wrote the bundle to {out}: copy it to the device and run `python run_bundle.py`")
        return 0
    calibration = run_measure(own, hardware) if mode == "measure" else run_ingest(own, hardware)
    path = Path(own.get("calibration", calibration_path(hardware.name)))
    write_calibration(calibration, path)
    print(summary(calibration))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
