"""The contract every runtime `nas.calibrate` measures in passes, and calibrations kept per
(hardware, runtime): a device calibrated in one runtime is never priced with it in another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.calibrate.fit import fit_and_score
from nas.calibrate.runtimes import BY_NAME, calibration_runtime
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.hardware import RUNTIMES
from predictors.calibrated import CalibratedPredictor, calibration_path
from predictors.factory import latency_predictor
from tests.executorch.helpers import needs_executorch
from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates

TINY = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=256)
RUNTIME_PARAMS = [
    pytest.param(name, marks=[needs_executorch] if name == "executorch" else [])
    for name in RUNTIMES
]


@pytest.mark.parametrize("name", RUNTIME_PARAMS)
def test_a_runtime_exports_and_times_every_phase(name: str, tmp_path: Path) -> None:
    runtime = calibration_runtime(name)
    hardware = profile().for_runtime(name).at_context(32)
    candidate = Candidate(TINY, CompressionConfig(4, 32))
    files = runtime.export(candidate, hardware, tmp_path)
    assert set(files) == {"decode", "prefill"}
    assert all(p.is_file() and p.suffix == runtime.suffix for p in files.values())
    again = runtime.export(candidate, hardware, tmp_path, phases=("decode",))
    assert again["decode"] == files["decode"]  # cached, not exported twice
    timing = runtime.time(files["decode"], threads=1, warmup=1, runs=5, max_seconds=2.0)
    assert timing.median_ms > 0 and timing.p10_ms <= timing.median_ms
    assert timing.steady_mb > 0 and timing.version


def test_every_runtime_of_the_group_can_be_calibrated() -> None:
    assert set(BY_NAME) == set(RUNTIMES)
    with pytest.raises(NasError, match="unknown runtime 'tflite'"):
        calibration_runtime("tflite")


def test_the_runtime_group_sets_the_profiles_runtime() -> None:
    for name in RUNTIMES:
        assert load_settings(["budget=smoke", f"runtime={name}"]).hardware.runtime == name
    with pytest.raises(NasError, match=r"hardware\.runtime=executorch is set by the runtime group"):
        load_settings(["budget=smoke", "hardware.runtime=executorch"])


def test_calibrations_are_kept_per_runtime(tmp_path: Path) -> None:
    assert calibration_path("rpi5").name == "rpi5.json"  # as before runtimes were chosen
    assert calibration_path("rpi5", runtime="executorch").name == "rpi5.executorch.json"
    ort, et = profile(), profile().for_runtime("executorch")
    rows = rows_from(TRUE_COEF, varied_candidates(16), ort)
    source = {"device": "t", "cpu_model": "t", "date": "t"}
    ort_cal = fit_and_score(rows, ort, source)
    assert ort_cal["conditions"]["runtime"] == "onnxruntime"
    calibration_path("local_cpu", tmp_path).write_text(json.dumps(ort_cal))
    # calibrated in ONNX Runtime only: ExecuTorch gets the prior, not ONNX Runtime's figures
    assert latency_predictor(ort, tmp_path).calibrated
    assert not latency_predictor(et, tmp_path).calibrated
    with pytest.raises(NasError, match="was measured in onnxruntime, not executorch; re-run"):
        CalibratedPredictor(et, ort_cal)
    et_cal = fit_and_score(rows_from(TRUE_COEF, varied_candidates(16), et), et, source)
    calibration_path("local_cpu", tmp_path, "executorch").write_text(json.dumps(et_cal))
    predictor = latency_predictor(et, tmp_path)
    assert predictor.calibrated and "ExecuTorch measurements" in predictor.provenance
    assert et_cal["conditions"]["decode_form"] == "static-cache"
    et_cal["conditions"]["decode_form"] = "cache-io"  # timed before decode held its cache
    with pytest.raises(NasError, match="KV cache as cache-io, but this version's executorch"):
        CalibratedPredictor(et, et_cal)


def test_executorch_int4_prices_the_layers_its_groups_do_not_fit_as_float() -> None:
    from predictors.features import features
    from predictors.footprint import padded_params, unfit_params

    arch = ArchConfig(n_layers=2, n_heads=6, n_kv_heads=2, head_dim=32, ffn_dim=520,
                      vocab_size=512)  # fmt: skip
    int4 = Candidate(arch, CompressionConfig(4, 128))
    assert unfit_params(arch, 128) > 0 and unfit_params(arch, 8) == 0
    ort, et = features(int4, profile()), features(int4, profile().for_runtime("executorch"))
    float_w, int4_w = 2, 4  # FEATURES["decode_ms"]: fixed, calls, float_w, int8_w, int4_w, ...
    moved = unfit_params(arch, 128) / 1e6
    padded = padded_params(arch, 128) / 1e6  # ONNX Runtime pads those layers to whole groups
    assert et["decode_ms"][float_w] == pytest.approx(ort["decode_ms"][float_w] + moved)
    assert et["decode_ms"][int4_w] == pytest.approx(ort["decode_ms"][int4_w] - padded - moved)
