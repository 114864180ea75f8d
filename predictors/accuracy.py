"""How good a latency predictor is on measured models: the figures the literature reports."""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy(predicted: list[float], measured: list[float]) -> dict[str, Any]:
    """Shares within ±10% and ±15%, mean absolute percentage error and Spearman rank correlation."""
    pred, true = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = np.abs(pred / true - 1.0)
    return {
        "n": len(true),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "within_15pct": float(np.mean(rel <= 0.15)),
        "mape": float(np.mean(rel)),
        "spearman": spearman(pred, true),
        "worst_rel_error": float(rel.max()),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties); 0.0 when fewer than 2 points or no spread."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
