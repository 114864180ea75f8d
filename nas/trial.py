"""One trial: sample a candidate, price it, and train it only when it fits the device.

Cheap objectives come first; an infeasible candidate is recorded with its constraint violations
and the bits per byte of an untrained (uniform) model, clearly marked `trained: false`. A candidate
that an earlier trial already trained (same architecture, compression and proxy settings) reuses
that result instead of training twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Any

import optuna
import torch

from nas.compression import CompressionSettings, plan, score_compressed
from nas.objectives import CheapObjectives
from nas.proxy import ProxyData, ProxyDiverged, ProxySettings, train_proxy
from search_spaces import SearchSpace

log = logging.getLogger(__name__)


class TrialObjective:
    """The callable handed to `study.optimize`: returns (bpb, decode_ms, memory_mb)."""

    def __init__(
        self,
        *,
        space: SearchSpace,
        cheap: CheapObjectives,
        data: ProxyData,
        settings: ProxySettings,
        proxy_identity: dict[str, Any],
        device: torch.device,
        seed: int,
        margin_sigmas: float = 0.0,
        compression: CompressionSettings | None = None,
    ) -> None:
        self.space = space
        self.cheap = cheap
        self.data = data
        self.settings = settings
        self.proxy_identity = proxy_identity
        self.device = device
        self.seed = seed
        self.margin_sigmas = margin_sigmas
        self.deploy = cheap.latency.hardware.deploy
        self.compression = compression or CompressionSettings()

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        candidate = self.space.suggest(trial)
        cheap = self.cheap(candidate)
        violations = cheap.violations(self.deploy, self.margin_sigmas)
        # A non-default recovery fine-tune changes the compressed score: part of the cache key.
        recovery = () if self.compression == CompressionSettings() else (asdict(self.compression),)
        key = candidate.key(self.proxy_identity, *recovery)
        trial.set_user_attr("arch", candidate.arch.to_dict())
        trial.set_user_attr("compression", candidate.compression.to_dict())
        trial.set_user_attr("recipe", plan(candidate).to_dict())  # measured below when trained
        for name, excess in violations.items():
            trial.set_constraint(name, excess)
        trial.set_user_attr("cache_key", key)
        metrics: dict[str, Any] = {**cheap.as_metrics(), "calibrated": self.cheap.calibrated}

        if any(v > 0 for v in violations.values()):
            over = [
                name.removesuffix("_excess_mb").removesuffix("_excess_ms")
                for name, v in violations.items()
                if v > 0
            ]
            trial.set_user_attr("trained", False)
            trial.set_user_attr("skipped", f"over the device limit: {', '.join(over)}")
            metrics["bpb"] = self.data.uniform_bpb(self.settings)
            metrics["bpb_uncompressed"] = metrics["bpb"]
        elif (previous := self._trained_before(trial.study, key)) is not None:
            trial.set_user_attr("trained", True)
            trial.set_user_attr("cached_from", previous.number)
            metrics["bpb"] = previous.user_attrs["metrics"]["bpb"]
            metrics["bpb_uncompressed"] = previous.user_attrs["metrics"].get(
                "bpb_uncompressed", metrics["bpb"]
            )
            trial.set_user_attr("recipe", previous.user_attrs.get("recipe"))
            trial.set_user_attr("learning_curve", previous.user_attrs.get("learning_curve", []))
        else:
            try:
                result = train_proxy(
                    candidate.arch, self.data, self.settings, seed=self.seed, device=self.device
                )
            except ProxyDiverged as err:
                trial.set_user_attr("fail_reason", str(err))
                raise
            trial.set_user_attr("trained", True)
            trial.set_user_attr("learning_curve", result.curve)
            trial.set_user_attr("train_seconds", round(result.seconds, 3))
            trial.set_user_attr("train_tokens", result.tokens)
            # `bpb` is the compressed model's (what the device runs); the trained one's is kept.
            metrics["bpb_uncompressed"] = result.bpb
            compressed_bpb, recipe = score_compressed(
                result.model,
                candidate,
                self.data,
                self.settings,
                settings=self.compression,
                seed=self.seed,
            )
            result.model = None  # free it before the next trial
            if compressed_bpb is not None and not math.isfinite(compressed_bpb):
                reason = f"compressed model's held-out bits per byte is {compressed_bpb}"
                trial.set_user_attr("fail_reason", reason)
                raise ProxyDiverged(reason)
            metrics["bpb"] = result.bpb if compressed_bpb is None else compressed_bpb
            trial.set_user_attr("recipe", recipe.to_dict())
            metrics["train_loss"] = result.train_loss
        trial.set_user_attr("metrics", metrics)
        return metrics["bpb"], metrics["decode_ms"], metrics["memory_mb"]

    @staticmethod
    def _trained_before(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
        for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            attrs = done.user_attrs
            if attrs.get("cache_key") == key and attrs.get("trained"):
                return done
        return None
