"""nas.calibrate: validating results, ingest, and bundle -> run -> ingest on this machine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.calibrate.__main__ import main
from nas.calibrate.calibration_set import CalibrationPoint, calibration_set
from nas.calibrate.run import CalibrateArgs, run_bundle, validate_results
from nas.errors import NasError
from nas.hardware import DECODE_FORMS
from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates


def _bundle_files(
    tmp_path: Path, n: int = 12, runtime: str = "onnxruntime"
) -> tuple[Path, list[dict[str, Any]]]:
    """A manifest as mode=bundle writes it, and rows as the device runner writes them."""
    hw = profile().for_runtime(runtime)
    rows = rows_from(TRUE_COEF, varied_candidates(n), hw)
    manifest = {
        "device": "local_cpu",
        "runtime": runtime,
        "threads": 2,
        "rounds": 1,
        "activations": "int8",
        "decode_form": DECODE_FORMS[runtime],
        "points": [
            {k: r[k] for k in ("id", "split", "arch", "compression")} | {"files": {}} for r in rows
        ],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    results = [
        {"id": r["id"], "device": "local_cpu", "decode_ms": r["decode_ms"],
         "prefill_ms": r["prefill_ms"], "memory_mb": r["memory_mb"]}
        for r in rows
    ]  # fmt: skip
    return tmp_path / "manifest.json", results


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "nope"}, "row 3 \\(id 'nope'\\): unknown model id"),
        ({"decode_ms": 0}, "row 3 .*decode_ms must be a positive number, got 0"),
        ({"prefill_ms": None}, "row 3 .*prefill_ms must be a positive number"),
        ({"device": "rpi5"}, "row 3 .*device 'rpi5' but the bundle is for 'local_cpu'"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    manifest, results = _bundle_files(tmp_path)
    results[2] = {**results[2], **change}
    with pytest.raises(NasError, match=message):
        validate_results(results, json.loads(manifest.read_text()))


def test_missing_time_is_named(tmp_path: Path) -> None:
    manifest, results = _bundle_files(tmp_path)
    del results[0]["memory_mb"]
    with pytest.raises(NasError, match=r"row 1 .*memory_mb must be a positive number, got None"):
        validate_results(results, json.loads(manifest.read_text()))


def test_ingest_fits_and_writes_the_calibration(tmp_path: Path, capsys) -> None:
    _, results = _bundle_files(tmp_path, n=16)
    out = tmp_path / "cal.json"
    written = _write(tmp_path / "results.jsonl", results)
    main(["hardware=local_cpu", "mode=ingest", f"results={written}", f"calibration={out}"])
    calibration = json.loads(out.read_text())
    assert calibration["calibrated"] and calibration["provenance"]["n_points"] == 8
    assert calibration["heldout"]["decode_ms"]["within_10pct"] == 1.0
    assert "held-out n=8" in capsys.readouterr().out


def test_ingest_refuses_another_devices_bundle(tmp_path: Path) -> None:
    _, results = _bundle_files(tmp_path)
    with pytest.raises(NasError, match="is for local_cpu, not rpi5"):
        main(["hardware=rpi5", "mode=ingest", f"results={_write(tmp_path / 'r.jsonl', results)}"])


def test_ingest_refuses_a_bundle_timed_in_another_int8_format(tmp_path: Path) -> None:
    manifest_path, results = _bundle_files(tmp_path)
    manifest = json.loads(manifest_path.read_text())
    del manifest["activations"]  # a bundle from before the format was recorded: weight-only
    manifest_path.write_text(json.dumps(manifest))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(NasError, match="float activations, but local_cpu's runtime runs them"):
        main(["hardware=local_cpu", "mode=ingest",
              f"results={_write(tmp_path / 'r.jsonl', results)}",
              f"calibration={tmp_path / 'out.json'}"])  # fmt: skip
    assert not (tmp_path / "out.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "r.jsonl"])


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="mode must be one of: measure, bundle, ingest, got 'fly'"):
        main(["hardware=local_cpu", "mode=fly"])
    with pytest.raises(NasError, match="needs out=DIR"):
        main(["hardware=local_cpu", "mode=bundle"])
    with pytest.raises(NasError, match="no such file"):
        main(["hardware=local_cpu", "mode=ingest", f"results={tmp_path / 'none.jsonl'}"])


def test_calibration_set_spans_the_space_and_splits_by_architecture() -> None:
    points = calibration_set()
    fit = [p for p in points if p.split == "fit"]
    held = [p for p in points if p.split == "heldout"]
    assert len(fit) == 20 and len(held) == 30
    assert not {p.candidate.arch for p in fit} & {p.candidate.arch for p in held}
    kinds = {(p.candidate.arch.is_moe, p.candidate.compression.weight_bits) for p in points}
    assert {b for _, b in kinds} == {16, 8, 4} and {m for m, _ in kinds} == {True, False}
    assert any(p.candidate.arch.n_kv_heads < p.candidate.arch.n_heads for p in points)


@pytest.mark.slow
def test_bundle_run_ingest_on_this_machine(tmp_path: Path) -> None:
    """The on-device path end to end: bundle, the bundle's own runner, ingest and fit."""
    points = []
    for i, (layers, heads, bits) in enumerate([(1, 2, 16), (2, 2, 8), (1, 4, 4), (2, 4, 16)]):
        arch = ArchConfig(n_layers=layers, n_heads=heads, n_kv_heads=1, head_dim=16,
                          ffn_dim=64, vocab_size=256)  # fmt: skip
        for j, b in enumerate((bits, 4 if bits != 4 else 8)):
            comp = CompressionConfig(b, 0 if b == 16 else 32)
            points.append(
                CalibrationPoint(f"t{i}{j}", Candidate(arch, comp), "fit" if i < 3 else "heldout")
            )
    out = tmp_path / "bundle"
    args = CalibrateArgs(out=str(out), rounds=1, runs_dir=str(tmp_path / "runs"))
    run_bundle(args, profile(), points)
    assert (out / "perf_test.sh").read_text().count("onnxruntime_perf_test") == 3 * len(points)
    subprocess.run([sys.executable, str(out / "run_bundle.py"), "rounds=1"], check=True)
    cal = tmp_path / "cal.json"
    main(["hardware=local_cpu", "mode=ingest", f"results={out / 'results.jsonl'}",
          f"calibration={cal}"])  # fmt: skip
    calibration = json.loads(cal.read_text())
    assert calibration["provenance"]["n_points"] == 6
    assert calibration["heldout"]["decode_ms"]["n"] == 2


@pytest.mark.parametrize("runtime", ["onnxruntime", "executorch"])
def test_ingest_in_each_runtime_records_it(tmp_path: Path, runtime: str) -> None:
    _, results = _bundle_files(tmp_path, n=16, runtime=runtime)
    out = tmp_path / "cal.json"
    written = _write(tmp_path / "results.jsonl", results)
    main(["hardware=local_cpu", f"runtime={runtime}", "mode=ingest", f"results={written}",
          f"calibration={out}"])  # fmt: skip
    calibration = json.loads(out.read_text())
    assert calibration["conditions"]["runtime"] == runtime
    assert calibration["heldout"]["decode_ms"]["within_10pct"] == 1.0


def test_ingest_refuses_an_executorch_bundle_whose_decode_passes_the_cache_in_and_out(
    tmp_path: Path,
) -> None:
    """Bundles from before ExecuTorch's decode held its cache timed another program."""
    manifest_path, results = _bundle_files(tmp_path, runtime="executorch")
    manifest = json.loads(manifest_path.read_text())
    del manifest["decode_form"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(NasError, match="KV cache as cache-io, but this version's hold it as st"):
        main(["hardware=local_cpu", "runtime=executorch", "mode=ingest",
              f"results={_write(tmp_path / 'r.jsonl', results)}",
              f"calibration={tmp_path / 'out.json'}"])  # fmt: skip
    assert not (tmp_path / "out.json").exists()


def test_ingest_refuses_a_bundle_of_another_runtime(tmp_path: Path) -> None:
    _, results = _bundle_files(tmp_path, runtime="executorch")
    written = _write(tmp_path / "results.jsonl", results)
    with pytest.raises(NasError, match="holds executorch models; ingest it with runtime=exec"):
        main(["hardware=local_cpu", "mode=ingest", f"results={written}",
              f"calibration={tmp_path / 'out.json'}"])  # fmt: skip
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_executorch_bundle_run_ingest_on_this_machine(tmp_path: Path) -> None:
    """The ExecuTorch bundle end to end: .pte files, the runner lines for adb, the bundle's own
    runner (ExecuTorch's Python runtime), ingest and fit."""
    pytest.importorskip("executorch")
    arch = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64,
                      vocab_size=256)  # fmt: skip
    points = [
        CalibrationPoint(f"e{i}", Candidate(replace(arch, n_layers=layers), comp), split)
        for i, (layers, comp, split) in enumerate(
            [(1, CompressionConfig(), "fit"), (2, CompressionConfig(8, 32), "fit"),
             (3, CompressionConfig(4, 32), "fit"), (1, CompressionConfig(4, 32), "fit"),
             (2, CompressionConfig(), "fit"), (3, CompressionConfig(8, 32), "fit"),
             (2, CompressionConfig(4, 32), "heldout")]
        )
    ]  # fmt: skip
    hw = profile().for_runtime("executorch")
    out = tmp_path / "bundle"
    run_bundle(CalibrateArgs(out=str(out), rounds=1, runs_dir=str(tmp_path / "runs")), hw, points)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"] == "executorch"
    assert all(name.endswith(".pte") for p in manifest["points"] for name in p["files"].values())
    lines = (out / "executor_runner.sh").read_text()
    assert lines.count("--model_path=") == 3 * len(points) and not (out / "measure.py").exists()
    subprocess.run([sys.executable, str(out / "run_bundle.py"), "rounds=1"], check=True)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["runtime"] == "executorch" and r["decode_long_ms"] > 0 for r in rows)
    cal = tmp_path / "cal.json"
    main(["hardware=local_cpu", "runtime=executorch", "mode=ingest",
          f"results={out / 'results.jsonl'}", f"calibration={cal}"])  # fmt: skip
    calibration = json.loads(cal.read_text())
    assert calibration["conditions"]["runtime"] == "executorch"
    assert calibration["conditions"]["long_context_len"] == hw.deploy.long_context
    assert calibration["provenance"]["executorch"].startswith("1.")
