"""The contract every predictor passes (RooflineLatency, MemoryModel, CalibratedPredictor).

Positive means, non-negative spreads, every declared quantity present, more work never predicted
faster or smaller, quantized weights never predicted larger in memory than 16-bit ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from nas.arch import Candidate, CompressionConfig
from nas.calibrate.fit import fit_and_score
from nas.hardware import HardwareProfile
from predictors import MemoryModel, Predictor, RooflineLatency
from predictors.calibrated import CalibratedPredictor, calibration_path
from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates


def _fitted(hardware: HardwareProfile) -> Predictor:
    rows = rows_from(TRUE_COEF, varied_candidates(24), hardware)
    calibration = fit_and_score(rows, hardware, {"device": "t", "cpu_model": "t", "date": "t"})
    return CalibratedPredictor(hardware, calibration)


def _shipped(hardware: HardwareProfile) -> Predictor:
    if not calibration_path(hardware.name).is_file():
        pytest.skip(f"no shipped calibration for {hardware.name}")
    return CalibratedPredictor.load(hardware)


FACTORIES: dict[str, Callable[[HardwareProfile], Predictor]] = {
    "roofline": RooflineLatency,
    "memory": MemoryModel,
    "calibrated-fit": _fitted,
    "calibrated-shipped": _shipped,
}


@pytest.fixture(params=list(FACTORIES))
def predictor(request: pytest.FixtureRequest) -> Predictor:
    return FACTORIES[request.param](profile("local_cpu"))


def test_every_quantity_has_a_positive_mean_and_a_spread(predictor: Predictor) -> None:
    for candidate in varied_candidates(12, seed=3):
        estimates = predictor.predict(candidate)
        assert set(estimates) == set(predictor.quantities)
        for est in estimates.values():
            assert est.mean > 0 and est.std >= 0
            assert est.upper(2.0) >= est.mean


def test_more_layers_never_predicted_faster_or_smaller(predictor: Predictor) -> None:
    for candidate in varied_candidates(9, seed=4):
        deeper = Candidate(replace(candidate.arch, n_layers=2 * candidate.arch.n_layers),
                           candidate.compression)  # fmt: skip
        small, large = predictor.predict(candidate), predictor.predict(deeper)
        for q in predictor.quantities:
            assert large[q].mean >= small[q].mean, q


def test_quantized_weights_never_predicted_larger_than_16_bit(predictor: Predictor) -> None:
    """8- and 4-bit never above 16-bit. Between 8 and 4 bits no order is imposed: on ONNX
    Runtime's CPU provider int4 (MatMulNBits, prepacked) measures larger than int8."""
    if "memory_mb" not in predictor.quantities:
        pytest.skip("predicts no memory")
    for candidate in varied_candidates(6, seed=5):
        full, *quantized = (
            predictor.predict(Candidate(candidate.arch, CompressionConfig(b, g)))["memory_mb"].mean
            for b, g in ((16, 0), (8, 32), (4, 32))
        )
        assert all(q <= full for q in quantized)


def test_says_whether_it_is_calibrated(predictor: Predictor) -> None:
    assert isinstance(predictor.calibrated, bool)
    assert predictor.provenance and "\n" not in predictor.provenance
