"""Cheap objectives (no training) and the device constraints they decide.

Parameter counts are exact; memory and latency come from the hardware's predictors. A candidate
over the device's RAM or decode-latency limit is infeasible: the trial records its violations as
Optuna constraints (`Trial.set_constraint`, through `nas.records`) and it is never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from nas.arch import Candidate
from nas.hardware import DeployBudget
from predictors import Estimate, Predictor


@dataclass(frozen=True)
class CheapMetrics:
    params: int
    active_params: int
    non_embedding_params: int
    memory: Estimate
    decode: Estimate
    prefill: Estimate
    decode_long: Estimate | None = None  # at the device's long context (DeployBudget)

    def violations(self, deploy: DeployBudget, margin_sigmas: float = 0.0) -> dict[str, float]:
        """How far over each device limit the candidate is (<= 0 means within it)."""
        return {
            "memory_excess_mb": self.memory.upper(margin_sigmas) - deploy.max_memory_mb,
            "decode_excess_ms": self.decode.upper(margin_sigmas) - deploy.max_decode_ms,
        }

    def as_metrics(self) -> dict[str, float]:
        return {
            "decode_ms": self.decode.mean,
            "decode_ms_std": self.decode.std,
            "tokens_per_s": 1000.0 / self.decode.mean,
            "prefill_ms": self.prefill.mean,
            "prefill_ms_std": self.prefill.std,
            "memory_mb": self.memory.mean,
            "memory_mb_std": self.memory.std,
            "params": self.params,
            "active_params": self.active_params,
            "non_embedding_params": self.non_embedding_params,
        } | (
            {"decode_ms_long": self.decode_long.mean, "decode_ms_long_std": self.decode_long.std}
            if self.decode_long
            else {}
        )


class CheapObjectives:
    """Prices candidates on one device with its latency and memory predictors; `long_latency`,
    the latency predictor of the device at its long context, adds decode there."""

    def __init__(
        self, latency: Predictor, memory: Predictor, long_latency: Predictor | None = None
    ) -> None:
        self.latency = latency
        self.memory = memory
        self.long_latency = long_latency

    @property
    def calibrated(self) -> bool:
        return self.latency.calibrated

    def __call__(self, candidate: Candidate) -> CheapMetrics:
        arch = candidate.arch
        latency = self.latency.predict(candidate)
        return CheapMetrics(
            params=arch.params,
            active_params=arch.active_params,
            non_embedding_params=arch.non_embedding_params,
            memory=self.memory.predict(candidate)["memory_mb"],
            decode=latency["decode_ms"],
            prefill=latency["prefill_ms"],
            decode_long=(
                self.long_latency.predict(candidate)["decode_ms"] if self.long_latency else None
            ),
        )
