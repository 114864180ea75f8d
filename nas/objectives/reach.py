"""Whether a study's candidates come anywhere near the device's limits.

A search whose every candidate uses a sliver of the device's decode-time and memory limits is
bounded by the budget's caps (layers, width, experts the proxy can train in time), not by the
device: its front says nothing about what the device could run. The console summary,
`pareto.json` (`device_reach`) and the report say so, and name the way to larger candidates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from nas import records

# Under this share of every limit, the caps bound the search rather than the device.
OUT_OF_REACH_SHARE = 0.10


@dataclass(frozen=True)
class Reach:
    """The largest share of each device limit that any of the study's candidates uses."""

    decode_share: float
    memory_share: float
    candidates: int
    pruned: bool = False  # a prune study: its shapes come from the parent, not the budget's caps

    @property
    def out_of_reach(self) -> bool:
        return max(self.decode_share, self.memory_share) < OUT_OF_REACH_SHARE

    def message(self, hardware: str) -> str:
        used = (
            f"every candidate uses under {OUT_OF_REACH_SHARE:.0%} of {hardware}'s limits (at "
            f"most {self.decode_share:.1%} of its decode time and {self.memory_share:.1%} of "
            "its memory)"
        )
        if self.pruned:  # the caps do not apply: every child is a part of the parent
            return (
                f"{used}: the parent, not the device, bounds this search. For candidates at the "
                "device's scale prune a larger parent (search_space.parent=DIR)"
            )
        return (
            f"{used}: the budget's caps, not the device, bound this search. For candidates "
            "at the device's scale use budget=gpu (larger caps, on a GPU) or raise the caps "
            "(budget.caps.max_layers=..., max_heads, max_head_dim, max_experts)"
        )

    def to_dict(self, hardware: str) -> dict[str, Any]:
        out: dict[str, Any] = {**asdict(self), "out_of_reach": self.out_of_reach}
        if self.out_of_reach:
            out["note"] = self.message(hardware)
        return out


def device_reach(
    trials: Iterable[FrozenTrial],
    *,
    max_decode_ms: float,
    max_memory_mb: float,
    pruned: bool = False,
) -> Reach | None:
    """How close the priced candidates come to the limits; None before any was priced.
    `pruned`: the study prunes a parent (its advice names the parent, not the caps)."""
    decode, memory = [], []
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        metrics = records.read(trial).metrics
        if "decode_ms" in metrics and "memory_mb" in metrics:
            decode.append(float(metrics["decode_ms"]))
            memory.append(float(metrics["memory_mb"]))
    if not decode:
        return None
    return Reach(
        decode_share=max(decode) / max_decode_ms,
        memory_share=max(memory) / max_memory_mb,
        candidates=len(decode),
        pruned=pruned,
    )
