"""Fitting the calibrated predictor, and picking it for the search when a calibration exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.calibrate.fit import fit_and_score, write_calibration
from nas.errors import NasError
from predictors import MemoryModel, RooflineLatency
from predictors.accuracy import accuracy
from predictors.calibrated import CalibratedPredictor, fit_rows, nnls_relative, row_candidate
from predictors.factory import latency_predictor, memory_predictor
from predictors.features import FEATURES, features
from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates

SOURCE = {"device": "local_cpu (test)", "cpu_model": "test cpu", "date": "2026-01-01"}


def test_fit_recovers_the_coefficients_of_a_device_that_follows_the_model() -> None:
    hw = profile()
    rows = rows_from(TRUE_COEF, varied_candidates(30), hw)
    fits = fit_rows(rows, hw)
    for q, true in TRUE_COEF.items():
        np.testing.assert_allclose(fits[q].coef, true, rtol=1e-3, atol=1e-7)
        assert fits[q].rel_std == pytest.approx(0.03)  # the floor: the fit is exact here


def test_coefficients_are_never_negative() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(20, 3))) + 0.1
    y = x @ np.array([1.0, -0.5, 2.0]) + 5.0  # a negative true cost: NNLS clips it to 0
    assert (nnls_relative(x, np.abs(y)) >= 0).all()


def test_heldout_scores_and_provenance_in_the_calibration(tmp_path: Path) -> None:
    hw = profile()
    rows = rows_from(TRUE_COEF, varied_candidates(30), hw)
    noisy = [
        {**r, "decode_ms": r["decode_ms"] * (1.3 if i == 1 else 1.0)} for i, r in enumerate(rows)
    ]
    calibration = fit_and_score(noisy, hw, SOURCE)
    held = calibration["heldout"]["decode_ms"]
    assert held["n"] == 15
    assert held["within_10pct"] == pytest.approx(14 / 15)  # only the perturbed row misses
    assert calibration["provenance"]["n_points"] == 15
    assert calibration["provenance"]["cpu_model"] == "test cpu"
    write_calibration(calibration, tmp_path / "local_cpu.json")
    loaded = CalibratedPredictor.load(hw, tmp_path / "local_cpu.json")
    assert loaded.calibrated and "test cpu" in loaded.provenance
    first = row_candidate(rows[0])
    assert loaded.predict(first)["prefill_ms"].mean == pytest.approx(rows[0]["prefill_ms"])


def test_factory_uses_a_calibration_only_where_one_exists(tmp_path: Path) -> None:
    hw = profile()
    assert isinstance(latency_predictor(hw, tmp_path), RooflineLatency)
    assert isinstance(memory_predictor(hw, tmp_path), MemoryModel)
    calibration = fit_and_score(rows_from(TRUE_COEF, varied_candidates(20), hw), hw, SOURCE)
    (tmp_path / "local_cpu.json").write_text(json.dumps(calibration))
    assert latency_predictor(hw, tmp_path).calibrated
    assert isinstance(memory_predictor(hw, tmp_path), CalibratedPredictor)
    assert not latency_predictor(profile("rpi5"), tmp_path).calibrated


def test_accuracy_figures() -> None:
    acc = accuracy([1.0, 2.2, 2.9, 4.0], [1.0, 2.0, 3.0, 4.4])
    assert acc["within_10pct"] == pytest.approx(0.75)
    assert acc["spearman"] == pytest.approx(1.0)
    assert acc["mape"] == pytest.approx((0 + 0.1 + 1 / 30 + 0.4 / 4.4) / 4)


def test_a_calibration_from_another_version_is_refused_with_a_fix() -> None:
    hw = profile()
    calibration = fit_and_score(rows_from(TRUE_COEF, varied_candidates(20), hw), hw, SOURCE)
    calibration["decode_ms"]["features"] = ["fixed", "bandwidth"]
    with pytest.raises(NasError, match=r"re-run python -m nas\.calibrate hardware=local_cpu"):
        CalibratedPredictor(hw, calibration)


def test_a_calibration_timed_in_another_int8_format_is_refused() -> None:
    """A CPU calibration whose int8/int4 graphs computed in float (weight-only MatMulNBits, 3-5x
    slower than fp32 here) would price a format the search does not deploy."""
    hw = profile()
    calibration = fit_and_score(rows_from(TRUE_COEF, varied_candidates(20), hw), hw, SOURCE)
    assert calibration["conditions"]["activations"] == "int8"
    del calibration["conditions"]["activations"]
    with pytest.raises(NasError, match="with float activations, but this device's runtime"):
        CalibratedPredictor(hw, calibration)


def test_decode_timed_at_the_long_context_identifies_the_kv_cost() -> None:
    """A device whose decode grows with the KV cache: rows timed at the profile's context and at
    4x it give the KV coefficient, and the calibration scores the held-out long-context decode."""
    hw = profile()
    long_hw = hw.at_context(hw.deploy.long_context)
    coef = {q: np.array(v, dtype=float) for q, v in TRUE_COEF.items()}
    kv = FEATURES["decode_ms"].index("kv")
    coef["decode_ms"][kv] = 0.05  # ms per million KV elements read
    rows = rows_from(coef, varied_candidates(30), hw)
    for row in rows:
        x = features(row_candidate(row), long_hw)["decode_ms"]
        row |= {"decode_long_ms": float(x @ coef["decode_ms"]), "long_context_len": 4 * 512}
    calibration = fit_and_score(rows, hw, SOURCE)
    assert calibration["conditions"]["long_context_len"] == hw.deploy.long_context
    assert calibration["decode_ms"]["coef"][kv] == pytest.approx(0.05, rel=1e-3)
    assert calibration["heldout"]["decode_ms_long"]["within_10pct"] == 1.0
    at_long = CalibratedPredictor(long_hw, calibration)
    short = CalibratedPredictor(hw, calibration)
    first = row_candidate(rows[0])
    assert at_long.predict(first)["decode_ms"].mean > short.predict(first)["decode_ms"].mean


def test_decode_reads_beyond_the_cache_and_query_head_attention_are_identified() -> None:
    """A device on which decode reads that fit its cache are cheap and the rest cost extra, and
    whose attention works per query head: the fit picks that cache size from the grid and
    recovers both costs, and the calibration file carries the cache size."""
    hw = profile()
    names = FEATURES["decode_ms"]
    coef = {q: np.array(v, dtype=float) for q, v in TRUE_COEF.items()}
    coef["decode_ms"][names.index("attention")] = 0.01
    coef["decode_ms"][names.index("spill")] = 0.2  # ms per MiB read beyond 8 MiB
    candidates = varied_candidates(40)
    spilled = [features(c, hw, 8.0)["decode_ms"][names.index("spill")] for c in candidates]
    assert 0 < sum(s > 0 for s in spilled) < len(candidates)  # both sides of the cache
    rows = rows_from(coef, candidates, hw, cache_mb=8.0)
    calibration = fit_and_score(rows, hw, SOURCE)
    assert calibration["decode_ms"]["cache_mb"] == 8.0
    np.testing.assert_allclose(calibration["decode_ms"]["coef"], coef["decode_ms"], rtol=1e-3)
    assert calibration["heldout"]["decode_ms"]["within_10pct"] == 1.0
    # No cache effect in the data: no spill term ("cache_mb": null), as before this term existed.
    plain = fit_and_score(rows_from(TRUE_COEF, candidates, hw), hw, SOURCE)
    assert plain["decode_ms"]["cache_mb"] is None
    assert CalibratedPredictor(hw, plain).fits["decode_ms"].cache_mb == float("inf")


def test_quantized_experts_are_priced_in_their_format_where_qmoe_holds_them() -> None:
    """ONNX Runtime's QMoE holds experts in the candidate's int4 when the widths hold whole
    groups: their weights move from the float expert term to int4's, and so does their memory;
    ExecuTorch keeps them float, and runs every expert at prefill."""
    from nas.arch import ArchConfig, Candidate, CompressionConfig
    from predictors.footprint import experts_quantized

    arch = ArchConfig(2, 4, 2, 32, 256, 512, n_experts=4, experts_per_token=2)
    int4, fp32 = CompressionConfig(weight_bits=4, group_size=32), CompressionConfig()
    ort_hw, et_hw = profile(), profile().for_runtime("executorch")
    column = {q: {f: i for i, f in enumerate(FEATURES[q])} for q in FEATURES}

    quantized = features(Candidate(arch, int4), ort_hw)
    assert experts_quantized(Candidate(arch, int4), "onnxruntime")
    assert quantized["decode_ms"][column["decode_ms"]["float_expert_w"]] == 0
    float_experts = features(Candidate(arch, fp32), ort_hw)
    expert_w = float_experts["decode_ms"][column["decode_ms"]["float_expert_w"]]
    active = arch.n_moe_layers * arch.experts_per_token * arch.mlp_params / 1e6
    assert expert_w == pytest.approx(active)
    assert quantized["decode_ms"][column["decode_ms"]["int4_w"]] >= active
    # Stored: the experts' bytes at 4 bits, not 32.
    mb = column["memory_mb"]
    assert quantized["memory_mb"][mb["float_mb"]] < float_experts["memory_mb"][mb["float_mb"]] / 2

    assert not experts_quantized(Candidate(arch, int4), "executorch")
    in_et = features(Candidate(arch, int4), et_hw)
    assert in_et["decode_ms"][column["decode_ms"]["float_expert_w"]] == pytest.approx(active)
    mac = column["prefill_ms"]["float_expert_mac"]
    assert in_et["prefill_ms"][mac] == pytest.approx(
        float_experts["prefill_ms"][mac] * arch.n_experts / arch.experts_per_token
    )
    ragged = ArchConfig(2, 4, 2, 32, 344, 512, n_experts=4, experts_per_token=2)
    assert not experts_quantized(Candidate(ragged, int4), "onnxruntime")  # 344 = 8 x 43


def test_a_calibration_measured_on_another_machine_says_so() -> None:
    """VMs sharing a CPU name have timed the same graphs 2-3x apart: a calibration "measured
    here" on another machine warns, with the fix, and so does one that does not say where; the
    same machine, or a device's bundle, do not."""
    from predictors.machine import this_machine

    hw = profile()
    calibration = fit_and_score(rows_from(TRUE_COEF, varied_candidates(20), hw), hw, SOURCE)
    here = this_machine()
    assert "CPUs" in here
    calibration["provenance"] |= {"device": "local_cpu (measured here)", "machine": "other CPU"}
    warning = CalibratedPredictor(hw, calibration).elsewhere
    assert warning and "other CPU" in warning and here in warning
    assert "re-run python -m nas.calibrate hardware=local_cpu" in warning
    calibration["provenance"]["machine"] = here
    assert CalibratedPredictor(hw, calibration).elsewhere is None
    calibration["provenance"] |= {"device": "rpi5 (bundle)", "machine": "other CPU"}
    assert CalibratedPredictor(hw, calibration).elsewhere is None
    del calibration["provenance"]["machine"]
    calibration["provenance"]["device"] = "local_cpu (measured here)"
    unknown = CalibratedPredictor(hw, calibration).elsewhere
    assert unknown and "does not record which machine" in unknown and here in unknown


def test_decode_pays_per_multiplication_a_token_runs() -> None:
    """Decode's fixed cost is counted in matrix multiplications: 6 per layer for attention
    (q, k, v, o, scores, mix), 3 per dense MLP, a router and 3 per chosen expert, and the LM
    head. A mixture-of-experts model choosing 2 experts runs more of them than its dense twin;
    its unchosen experts add none."""
    from nas.arch import ArchConfig, Candidate, CompressionConfig
    from predictors.features import gemm_calls

    dense = ArchConfig(2, 4, 2, 32, 256, 512)
    top2 = ArchConfig(2, 4, 2, 32, 256, 512, n_experts=4, experts_per_token=2)
    assert gemm_calls(dense) == 2 * (6 + 3) + 1
    assert gemm_calls(top2) == 2 * (6 + 1 + 3 * 2) + 1
    wider_pool = ArchConfig(2, 4, 2, 32, 256, 512, n_experts=8, experts_per_token=2)
    assert gemm_calls(wider_pool) == gemm_calls(top2)
    calls = FEATURES["decode_ms"].index("calls")
    for arch in (dense, top2):
        x = features(Candidate(arch, CompressionConfig()), profile())["decode_ms"]
        assert x[calls] == gemm_calls(arch)


def test_prefill_pays_per_quantization_block() -> None:
    """int8-compute kernels quantize activations and scale partial sums per group: int4 in
    groups of 32 runs 4x the blocks of groups of 128 over the same multiply-adds; float and
    per-channel weights run none."""
    from nas.arch import ArchConfig, Candidate, CompressionConfig

    arch = ArchConfig(2, 4, 2, 32, 256, 512)
    blocks = FEATURES["prefill_ms"].index("quant_blocks")

    def prefill_blocks(comp: CompressionConfig) -> float:
        return float(features(Candidate(arch, comp), profile())["prefill_ms"][blocks])

    g32, g128 = prefill_blocks(CompressionConfig(4, 32)), prefill_blocks(CompressionConfig(4, 128))
    assert g32 > 0 and g32 == pytest.approx(4 * g128)
    assert prefill_blocks(CompressionConfig(8, 32)) == pytest.approx(g32)  # the same block count
    assert prefill_blocks(CompressionConfig()) == 0
    assert prefill_blocks(CompressionConfig(8, 0)) == 0  # per-channel int8


def test_onnx_runtime_int8_int4_pay_for_whole_groups() -> None:
    """MatMulNBits pads each layer's input width up to whole groups: at width 192 in groups of
    128 every layer reading the residual stores and multiplies 256 columns. Widths that hold whole
    groups add nothing, and ExecuTorch (which keeps such layers float) adds none."""
    from nas.arch import ArchConfig, Candidate, CompressionConfig
    from predictors.footprint import padded_params, unfit_params

    narrow = ArchConfig(2, 6, 2, 32, 512, 512)  # d_model 192, attention width 192
    attn, kv = 6 * 32, 2 * 32
    per_layer = (attn + 2 * kv) * 64 + 192 * 64 + 2 * 512 * 64  # q k v, o, gate up; down fits
    assert padded_params(narrow, 128) == 2 * per_layer
    assert padded_params(narrow, 64) == 0 and padded_params(narrow, 0) == 0
    int4 = Candidate(narrow, CompressionConfig(4, 128))
    column = FEATURES["decode_ms"].index("int4_w")
    ort = features(int4, profile())["decode_ms"][column]
    fits = features(Candidate(narrow, CompressionConfig(4, 64)), profile())["decode_ms"][column]
    assert ort == pytest.approx(fits + padded_params(narrow, 128) / 1e6)
    et = features(int4, profile().for_runtime("executorch"))["decode_ms"][column]
    assert et == pytest.approx(fits - unfit_params(narrow, 128) / 1e6)
