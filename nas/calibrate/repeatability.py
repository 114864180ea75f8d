"""Whether a device's measurements repeat: the figure reported beside the predictor's accuracy.

A graph repeats within ±t when every measurement round lies within ±t of the rounds' median.
Graphs that do not repeat within ±10% are listed (flagged, not silently fitted), and the held-out
accuracy is also given on the graphs that repeat within ±5% (`nas.calibrate.run`).
"""

from __future__ import annotations

import statistics
from typing import Any


def repeats(row: dict[str, Any], quantity: str, tolerance: float) -> bool | None:
    """Whether every measurement round of `row` lies within ±tolerance of their median (None
    when the row has no rounds, e.g. a device's single figure)."""
    rounds = row.get(f"{quantity.removesuffix('_ms')}_rounds_ms")  # decode_ms -> decode_rounds_ms
    if not rounds:
        return None
    middle = statistics.median(rounds)
    return all(abs(x / middle - 1.0) <= tolerance for x in rounds)


def repeatability(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per timed quantity: the share of graphs whose rounds agree within ±5% and ±10%, the
    graphs that do not (flagged, not silently fitted), and the rounds measured while noisy."""
    out: dict[str, Any] = {}
    for q in ("decode_ms", "prefill_ms"):
        known = [r for r in rows if repeats(r, q, 0.10) is not None]
        if not known:
            continue
        out[q] = {
            "graphs": len(known),
            "within_5pct": sum(bool(repeats(r, q, 0.05)) for r in known) / len(known),
            "within_10pct": sum(bool(repeats(r, q, 0.10)) for r in known) / len(known),
            "not_repeating": [r["id"] for r in known if not repeats(r, q, 0.10)],
        }
    noise = rows[0].get("round_noise") if rows else None
    if noise is not None:
        out["noisy_rounds"] = [i + 1 for i, why in enumerate(noise) if why]
    return out
