"""One trial: sample a candidate, price it, and train it only when it fits the device.

Cheap objectives come first; an infeasible candidate is recorded with its constraint violations
and the bits per byte of an untrained (uniform) model, clearly marked `trained: false`. A candidate
that an earlier trial already trained (same architecture, compression and proxy settings) reuses
that result instead of training twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
import torch

from nas.arch import Candidate
from nas.compression import CompressionSettings, plan, score_compressed
from nas.early_stop import EarlyStopping, finished_trials
from nas.hypervolume import Reference
from nas.objectives import CheapMetrics, CheapObjectives
from nas.proxies import QualityProxy, TrainProxy
from nas.proxy import ProxyData, ProxyDiverged, ProxySettings, train_proxy
from nas.study import record
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
        proxy: QualityProxy | None = None,
        early_stop: EarlyStopping | None = None,
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
        self.proxy = proxy or TrainProxy()
        # Early stopping needs intermediate bits per byte, which only training proxies measure.
        self.early_stop = early_stop if self.proxy.trains else None

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        candidate = self.space.suggest(trial)
        cheap = self.cheap(candidate)
        violations = cheap.violations(self.deploy, self.margin_sigmas)
        # A non-default recovery fine-tune changes the compressed score: part of the cache key.
        recovery = () if self.compression == CompressionSettings() else (asdict(self.compression),)
        # Another proxy scores differently: part of the key (the default `train` keeps old keys).
        scorer = () if self.proxy.name == "train" else (self.proxy.identity(),)
        key = candidate.key(self.proxy_identity, *recovery, *scorer)
        # What the trial is, stored before it trains (one write: `nas.study.record`), so that a
        # running trial shows its candidate; what it measured is stored once at the end.
        record(
            trial,
            {
                "arch": candidate.arch.to_dict(),
                "compression": candidate.compression.to_dict(),
                "recipe": plan(candidate).to_dict(),  # measured below when trained
                "cache_key": key,
            },
            violations,
        )
        result: dict[str, Any] = {}
        try:
            return self._score(trial, candidate, cheap, violations, key, result)
        finally:
            record(trial, result)

    def _score(
        self,
        trial: optuna.Trial,
        candidate: Candidate,
        cheap: CheapMetrics,
        violations: dict[str, float],
        key: str,
        result: dict[str, Any],
    ) -> tuple[float, float, float]:
        """The objectives; the user attributes to store go into `result`, also on failure."""
        metrics: dict[str, Any] = {**cheap.as_metrics(), "calibrated": self.cheap.calibrated}
        if any(v > 0 for v in violations.values()):
            over = [
                name.removesuffix("_excess_mb").removesuffix("_excess_ms")
                for name, v in violations.items()
                if v > 0
            ]
            result["trained"] = False
            result["skipped"] = f"over the device limit: {', '.join(over)}"
            metrics["bpb"] = self.data.uniform_bpb(self.settings)
            metrics["bpb_uncompressed"] = metrics["bpb"]
        elif (previous := self._trained_before(trial.study, key)) is not None:
            result["trained"] = True
            result["cached_from"] = previous.number
            metrics["bpb"] = previous.user_attrs["metrics"]["bpb"]
            metrics["bpb_uncompressed"] = previous.user_attrs["metrics"].get(
                "bpb_uncompressed", metrics["bpb"]
            )
            result["recipe"] = previous.user_attrs.get("recipe")
            result["learning_curve"] = previous.user_attrs.get("learning_curve", [])
            result["checkpoints"] = previous.user_attrs.get("checkpoints", [])
        elif not self.proxy.trains:
            # Training-free proxy: `trained` here means "scored by the selected proxy".
            result["trained"] = True
            metrics["bpb"] = self.proxy.score(candidate.arch, None)
            metrics["bpb_uncompressed"] = metrics["bpb"]
            metrics["quality_proxy"] = self.proxy.name  # a rank score, not bits per byte
        else:
            checkpoints = set(self.proxy.checkpoint_steps(self.settings))
            if self.early_stop is not None:
                checkpoints.update(self.early_stop.steps(self.settings.steps))
            reasons: list[str] = []
            try:
                run = train_proxy(
                    candidate.arch,
                    self.data,
                    self.settings,
                    seed=self.seed,
                    device=self.device,
                    checkpoints=sorted(checkpoints),
                    on_checkpoint=self._stop_rule(trial.study, cheap, reasons),
                )
            except ProxyDiverged as err:
                result["fail_reason"] = str(err)
                raise
            result["learning_curve"] = run.curve
            result["checkpoints"] = run.checkpoints
            result["train_seconds"] = round(run.seconds, 3)
            result["train_tokens"] = run.tokens
            if run.stopped_at is not None:
                # Recorded honestly: PRUNED, never a finished Pareto member; partial curve kept.
                result["trained"] = False
                result["early_stopped"] = {
                    "step": run.stopped_at,
                    "bpb": run.bpb,
                    "reason": reasons[0],
                }
                result["metrics"] = {**metrics, "bpb_partial": run.bpb}
                raise optuna.TrialPruned(f"stopped early: {reasons[0]}")
            result["trained"] = True
            # `bpb` is the compressed model's (what the device runs); the trained one's is kept.
            metrics["bpb_uncompressed"] = run.bpb
            compressed_bpb, recipe = score_compressed(
                run.model,
                candidate,
                self.data,
                self.settings,
                settings=self.compression,
                seed=self.seed,
            )
            run.model = None  # free it before the next trial
            if compressed_bpb is not None and not math.isfinite(compressed_bpb):
                reason = f"compressed model's held-out bits per byte is {compressed_bpb}"
                result["fail_reason"] = reason
                raise ProxyDiverged(reason)
            metrics["bpb"] = run.bpb if compressed_bpb is None else compressed_bpb
            if not isinstance(self.proxy, TrainProxy):
                # Another proxy's score (e.g. extrapolated bpb) is the objective; a compression
                # penalty measured on the trained model carries over as a difference.
                metrics["bpb"] = self.proxy.score(candidate.arch, run) + (metrics["bpb"] - run.bpb)
            metrics["quality_proxy"] = self.proxy.name
            result["recipe"] = recipe.to_dict()
            metrics["train_loss"] = run.train_loss
        result["metrics"] = metrics
        return metrics["bpb"], metrics["decode_ms"], metrics["memory_mb"]

    def _stop_rule(
        self, study: optuna.Study, cheap: CheapMetrics, reasons: list[str]
    ) -> Callable[[int, float], bool] | None:
        """The checkpoint callback of early stopping; appends why it stopped to `reasons`."""
        if self.early_stop is None:
            return None
        rule = self.early_stop
        stored = study.user_attrs.get("hypervolume_reference")
        reference = Reference.from_dict(stored) if stored else None

        def stop(step: int, bpb: float) -> bool:
            reason = rule.should_stop(
                step, bpb, cheap.decode.mean, cheap.memory.mean, finished_trials(study), reference
            )
            if reason is not None:
                reasons.append(reason)
            return reason is not None

        return stop

    @staticmethod
    def _trained_before(study: optuna.Study, key: str) -> optuna.trial.FrozenTrial | None:
        # The study's per-trial snapshot (taken when the sampler read the trials) saves a storage
        # read per trial; a twin finished by another worker since then is merely trained twice.
        complete = (optuna.trial.TrialState.COMPLETE,)
        for done in study._get_trials(deepcopy=False, states=complete, use_cache=True):
            attrs = done.user_attrs
            if attrs.get("cache_key") == key and attrs.get("trained"):
                return done
        return None
