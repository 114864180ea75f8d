"""One trial: sample a candidate, price it, and train it only when it fits the device.

Cheap objectives come first; an infeasible candidate is recorded with its constraint violations
and the bits per byte of an untrained (uniform) model, clearly marked `trained: false`. A candidate
that an earlier trial already trained (same architecture, compression and proxy settings) reuses
that result instead of training twice. What a trial stores is `nas.records`' schema.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
import torch

from nas import records
from nas.arch import Candidate
from nas.compression import plan, score_compressed
from nas.config.schema import CompressionSettings, ProxySettings
from nas.objectives.cheap import CheapMetrics, CheapObjectives
from nas.objectives.hypervolume import Reference
from nas.quality.early_stop import EarlyStopping, finished_trials
from nas.quality.scorers import QualityProxy, TrainProxy
from nas.quality.training import ProxyData, ProxyDiverged, ProxyResult, train_proxy
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

    def cache_key(self, candidate: Candidate) -> str:
        """What decides a candidate's result: the candidate, the proxy run, and any setting
        that scores differently from the defaults (which keep the keys of older studies)."""
        recovery = () if self.compression == CompressionSettings() else (asdict(self.compression),)
        scorer = () if self.proxy.name == "train" else (self.proxy.identity(),)
        return candidate.key(self.proxy_identity, *recovery, *scorer)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        candidate = self.space.suggest(trial)
        cheap = self.cheap(candidate)
        violations = cheap.violations(self.deploy, self.margin_sigmas)
        key = self.cache_key(candidate)
        recipe = plan(candidate).to_dict()  # measured below when trained
        records.store_candidate(trial, candidate, constraints=violations, recipe=recipe, key=key)
        outcome = records.Outcome(
            metrics={**cheap.as_metrics(), "calibrated": self.cheap.calibrated}
        )
        try:
            return self._score(trial, candidate, cheap, violations, key, outcome)
        finally:
            records.store_outcome(trial, outcome)

    def _score(
        self,
        trial: optuna.Trial,
        candidate: Candidate,
        cheap: CheapMetrics,
        violations: dict[str, float],
        key: str,
        outcome: records.Outcome,
    ) -> tuple[float, float, float]:
        """The objectives; what to store goes into `outcome`, also on failure."""
        metrics = outcome.metrics
        assert metrics is not None
        over = [name.rsplit("_excess", 1)[0] for name, v in violations.items() if v > 0]
        if over:
            outcome.trained = False
            outcome.skipped = f"over the device limit: {', '.join(over)}"
            metrics["bpb"] = metrics["bpb_uncompressed"] = self.data.uniform_bpb(self.settings)
        elif (previous := self._trained_before(trial.study, key)) is not None:
            outcome.reuse(previous)
        elif not self.proxy.trains:
            # Training-free proxy: `trained` here means "scored by the selected proxy".
            outcome.trained = True
            metrics["bpb"] = metrics["bpb_uncompressed"] = self.proxy.score(candidate.arch, None)
            metrics["quality_proxy"] = self.proxy.name  # a rank score, not bits per byte
        else:
            self._train(trial, candidate, cheap, outcome)
        return metrics["bpb"], metrics["decode_ms"], metrics["memory_mb"]

    def _train(
        self,
        trial: optuna.Trial,
        candidate: Candidate,
        cheap: CheapMetrics,
        outcome: records.Outcome,
    ) -> None:
        """Train the candidate, compress it, and score it; raises to prune or fail the trial."""
        metrics = outcome.metrics
        assert metrics is not None
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
            outcome.fail_reason = str(err)
            raise
        outcome.learning_curve = run.curve
        outcome.checkpoints = run.checkpoints
        outcome.train_seconds = round(run.seconds, 3)
        outcome.train_tokens = run.tokens
        if run.stopped_at is not None:
            # Recorded honestly: PRUNED, never a finished Pareto member; partial curve kept.
            outcome.trained = False
            outcome.early_stopped = {"step": run.stopped_at, "bpb": run.bpb, "reason": reasons[0]}
            metrics["bpb_partial"] = run.bpb
            raise optuna.TrialPruned(f"stopped early: {reasons[0]}")
        outcome.trained = True
        self._compress(candidate, run, outcome)

    def _compress(self, candidate: Candidate, run: ProxyResult, outcome: records.Outcome) -> None:
        """Score the trained model after the candidate's compression: `bpb` is the compressed
        model's (what the device runs); the trained one's is kept as `bpb_uncompressed`."""
        metrics = outcome.metrics
        assert metrics is not None and run.model is not None
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
            outcome.fail_reason = f"compressed model's held-out bits per byte is {compressed_bpb}"
            raise ProxyDiverged(outcome.fail_reason)
        metrics["bpb"] = run.bpb if compressed_bpb is None else compressed_bpb
        if not isinstance(self.proxy, TrainProxy):
            # Another proxy's score (e.g. extrapolated bpb) is the objective; a compression
            # penalty measured on the trained model carries over as a difference.
            metrics["bpb"] = self.proxy.score(candidate.arch, run) + (metrics["bpb"] - run.bpb)
        metrics["quality_proxy"] = self.proxy.name
        metrics["train_loss"] = run.train_loss
        outcome.recipe = recipe.to_dict()

    def _stop_rule(
        self, study: optuna.Study, cheap: CheapMetrics, reasons: list[str]
    ) -> Callable[[int, float], bool] | None:
        """The checkpoint callback of early stopping; appends why it stopped to `reasons`."""
        if self.early_stop is None:
            return None
        rule = self.early_stop
        stored = records.reference(study)
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
            if records.cache_key(done) == key and records.is_trained(done):
                return done
        return None
