"""A latency and memory predictor fitted to measurements from the device, in one runtime (ONNX
Runtime or ExecuTorch: `calibration_path`).

Each quantity is a sum of costs, one coefficient per unit of work (`predictors.features` says
which work and why), fitted by non-negative least squares on relative error so that more work is
never predicted faster. Decode's cache size is picked per device from `CACHE_GRID_MB` by
leave-one-out error.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.errors import NasError
from nas.hardware import HardwareProfile, runtime_suffix
from predictors.base import Estimate, Predictor
from predictors.conditions import check_conditions, runtime_of
from predictors.features import FEATURES, features
from predictors.machine import calibrated_elsewhere

CALIBRATIONS = Path(__file__).parent / "calibrations"
QUANTITIES = ("decode_ms", "prefill_ms", "memory_mb")
# Working-set sizes (MiB) a calibration tries as the cache decode reads fit in; inf: no such cache.
CACHE_GRID_MB = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, math.inf)


def nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the squared *relative* error of `x @ coef` to `y`."""
    from scipy.optimize import nnls

    scale = 1.0 / y
    coef, _ = nnls(x * scale[:, None], np.ones_like(y))
    return coef


@dataclass(frozen=True)
class Fit:
    """Fitted coefficients of one quantity and its one-sigma relative error."""

    coef: tuple[float, ...]
    rel_std: float
    cache_mb: float = math.inf  # decode: the cache its reads fit in (see `features`)

    def predict(self, x: np.ndarray) -> float:
        return float(np.dot(self.coef, x))


def fit_rows(
    rows: list[dict[str, Any]], hardware: HardwareProfile, *, min_rel_std: float = 0.03
) -> dict[str, Fit]:
    """Fit every quantity on measured rows (each with arch, compression and the quantities).

    The relative spread is the leave-one-out relative RMS error (at least `min_rel_std`), so a
    latency limit checked at `mean + k * std` carries the fit's honest error. Decode's cache size
    is the one of `CACHE_GRID_MB` with the smallest leave-one-out error (ties: the larger).
    """
    cands = [row_candidate(r) for r in rows]
    fits = {}
    for q in QUANTITIES:
        caches = CACHE_GRID_MB if q == "decode_ms" else (math.inf,)
        tried = [_fit_one(q, cands, rows, hardware, cache) for cache in caches]
        best = min(tried, key=lambda f: (round(f.rel_std, 9), -f.cache_mb))
        fits[q] = Fit(best.coef, max(min_rel_std, best.rel_std), best.cache_mb)
    return fits


def _fit_one(
    q: str, cands: list[Candidate], rows: list[dict[str, Any]], hw: HardwareProfile, cache: float
) -> Fit:
    """Coefficients of quantity `q` with decode's cache at `cache`, and their leave-one-out
    relative RMS error (0.35, an uncalibrated prior's, from a single row)."""
    x = np.stack([features(c, hw, cache)[q] for c in cands])
    y = np.array([float(r[q]) for r in rows])
    if q == "decode_ms":  # decode at the long context too, where measured: the KV term
        long = [(c, r) for c, r in zip(cands, rows, strict=True) if r.get("decode_long_ms")]
        if long:
            x = np.concatenate([x, [_long_features(c, r, hw, cache) for c, r in long]])
            y = np.concatenate([y, [float(r["decode_long_ms"]) for _, r in long]])
    coef = nnls_relative(x, y)
    loo = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c = nnls_relative(x[keep], y[keep])
        loo.append(float(x[i] @ c) / y[i] - 1.0)
    rel = float(np.sqrt(np.mean(np.square(loo)))) if len(y) > 1 else 0.35
    return Fit(tuple(float(v) for v in coef), rel, cache)


def _long_features(
    candidate: Candidate, row: dict[str, Any], hw: HardwareProfile, cache_mb: float
) -> np.ndarray:
    return features(candidate, hw.at_context(int(row["long_context_len"])), cache_mb)["decode_ms"]


def row_candidate(row: dict[str, Any]) -> Candidate:
    return Candidate(ArchConfig.from_dict(row["arch"]), CompressionConfig(**row["compression"]))


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}


def calibration_path(
    hardware_name: str, directory: Path = CALIBRATIONS, runtime: str = "onnxruntime"
) -> Path:
    """Where the calibration of a device in a runtime lives: `<H>.json` for ONNX Runtime,
    `<H>.<runtime>.json` for the others."""
    return directory / f"{hardware_name}{runtime_suffix(runtime)}.json"


class CalibratedPredictor(Predictor):
    """Decode, prefill and memory from coefficients fitted on the device (see module doc)."""

    quantities: ClassVar[tuple[str, ...]] = QUANTITIES

    def __init__(self, hardware: HardwareProfile, calibration: dict[str, Any]) -> None:
        super().__init__(hardware)
        for q in QUANTITIES:
            if tuple(calibration.get(q, {}).get("features", ())) != FEATURES[q]:
                raise NasError(
                    f"the calibration of {hardware.name} was fitted with other {q} features than "
                    f"this version uses; re-run python -m nas.calibrate hardware={hardware.name}"
                )
        check_conditions(calibration, hardware)
        self.calibration = calibration
        self.fits = {
            q: Fit(
                tuple(calibration[q]["coef"]),
                float(calibration[q]["rel_std"]),
                _cache_from_json(calibration[q].get("cache_mb")),
            )
            for q in QUANTITIES
        }

    @classmethod
    def load(cls, hardware: HardwareProfile, path: Path | None = None) -> CalibratedPredictor:
        path = Path(path or calibration_path(hardware.name, runtime=hardware.runtime))
        try:
            calibration = json.loads(path.read_text())
            return cls(hardware, calibration)
        except NasError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise NasError(
                f"calibration file {path} is unreadable or corrupted ({type(err).__name__}: "
                f"{err}); re-run python -m nas.calibrate hardware={hardware.name}, or delete it "
                "to search with the uncalibrated prior"
            ) from None

    @property
    def calibrated(self) -> bool:
        return True

    @property
    def provenance(self) -> str:
        p = self.calibration["provenance"]
        runtime = runtime_of(self.calibration)
        return (
            f"calibrated on {p['n_points']} {RUNTIME_NAMES[runtime]} measurements on "
            f"{p['cpu_model']} ({p['device']}, {p['threads']} threads, {runtime} "
            f"{p.get(runtime, '?')}, {p['date']})"
        )

    @property
    def elsewhere(self) -> str | None:
        """A warning when this calibration may describe another machine (predictors.machine)."""
        return calibrated_elsewhere(self.calibration.get("provenance", {}), self.hardware.name)

    @property
    def identity(self) -> str:
        """The fit's fingerprint: a re-calibration changes every price, so a study priced with
        one calibration never resumes with another (nas.study.open)."""
        fitted = {q: self.calibration[q] for q in QUANTITIES}
        payload = json.dumps([fitted, self.calibration.get("conditions")], sort_keys=True)
        return f"calibrated {hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def predict(self, candidate: Candidate) -> dict[str, Estimate]:
        x = features(candidate, self.hardware, self.fits["decode_ms"].cache_mb)
        out = {}
        for q, fit in self.fits.items():
            mean = max(fit.predict(x[q]), 1e-6)
            out[q] = Estimate(mean, mean * fit.rel_std)
        return out


def to_json(fits: dict[str, Fit]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q, f in fits.items():
        out[q] = {"features": list(FEATURES[q]), "coef": list(f.coef), "rel_std": f.rel_std}
        if q == "decode_ms":  # JSON has no infinity: null is "no cache term"
            out[q]["cache_mb"] = f.cache_mb if math.isfinite(f.cache_mb) else None
    return out


def _cache_from_json(value: Any) -> float:
    return math.inf if value is None else float(value)
