"""The predictors a hardware profile gets: its calibration when one exists, the prior otherwise."""

from __future__ import annotations

from pathlib import Path

from nas.hardware import HardwareProfile
from predictors.base import Predictor
from predictors.calibrated import CALIBRATIONS, CalibratedPredictor, calibration_path
from predictors.memory import MemoryModel
from predictors.roofline import RooflineLatency


def calibration_for(
    hardware: HardwareProfile, directory: Path = CALIBRATIONS
) -> CalibratedPredictor | None:
    """The calibrated predictor of `hardware` in its runtime, or None when that pair has not been
    calibrated."""
    path = calibration_path(hardware.name, directory, hardware.runtime)
    return CalibratedPredictor.load(hardware, path) if path.is_file() else None


def latency_predictor(hardware: HardwareProfile, directory: Path = CALIBRATIONS) -> Predictor:
    """decode_ms and prefill_ms: calibrated on the device if possible, else the roofline prior."""
    return calibration_for(hardware, directory) or RooflineLatency(hardware)


def memory_predictor(hardware: HardwareProfile, directory: Path = CALIBRATIONS) -> Predictor:
    """memory_mb as measured by the calibration (the runtime's own formats), else analytic."""
    return calibration_for(hardware, directory) or MemoryModel(hardware)
