"""One trial: sample a candidate, price it, and train it only when it fits the device.

Cheap objectives come first; an infeasible candidate is recorded with its constraint violations
and the bits per byte of an untrained (uniform) model, clearly marked `trained: false`. A candidate
that an earlier trial already trained (same architecture, compression and proxy settings) reuses
that result instead of training twice. A trained candidate climbs the study's rungs
(`nas.search.ladder`); the trial's values are its rung-0 objectives. A trial queued to take an
earlier trial's candidate further (a late promotion, `nas.search.late`) climbs on from where that
one stayed. What a trial stores is `nas.records`' schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import optuna
import torch

from nas import records
from nas.arch import Candidate
from nas.compression import plan
from nas.config.schema import QUANT_FORMATS, CompressionSettings, ProxySettings
from nas.fidelity.rungs import Rungs
from nas.objectives.cheap import CheapMetrics, CheapObjectives
from nas.objectives.hypervolume import Reference
from nas.quality.early_stop import EarlyStopping, finished_trials
from nas.quality.scorers import QualityProxy, TrainProxy
from nas.quality.training import ProxyData, ProxyDiverged, ProxyRun
from nas.search import late
from nas.search.ladder import Ladder
from search_spaces import SearchSpace

if TYPE_CHECKING:  # nas.parent loads with a prune study only
    from nas.quality.pruned import Pruning

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
        rungs: Rungs | None = None,
        pruning: Pruning | None = None,
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
        self.rungs = rungs or Rungs(steps=settings.steps, count=1, seeds=1)
        self.deadline: float | None = None  # time.time() after which no promotion starts
        # Set once the run starts its last trial: rungs' top shares are rounded up.
        self.closing = False
        self.trials_left: int | None = None  # where this process runs all of the run's trials
        # search_space=prune: runs start from the child pruned out of the parent, distilled.
        self.pruning = pruning

    def start_run(self, candidate: Candidate, seed: int) -> ProxyRun:
        """Every proxy run of a trial (rung 0's, each further top-rung seed's) starts here."""
        if self.pruning is not None:
            return self.pruning.run(
                candidate.arch, self.data, self.settings, seed=seed, device=self.device
            )
        # A shrink candidate trains its larger shape; compression prunes it to `arch`.
        return ProxyRun(
            candidate.trained_arch, self.data, self.settings, seed=seed, device=self.device
        )

    def cache_key(self, candidate: Candidate) -> str:
        """What decides a candidate's result: the candidate, the proxy run, and any setting
        that scores differently from the defaults (which keep the keys of older studies)."""
        scoring = asdict(self.compression)
        if scoring["quant_format"] in (None, QUANT_FORMATS["onnxruntime"]):
            del scoring["quant_format"]  # the numerics every older key was scored in
        recovery = () if self.compression == CompressionSettings() else (scoring,)
        scorer = () if self.proxy.name == "train" else (self.proxy.identity(),)
        return candidate.key(self.proxy_identity, *recovery, *scorer)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        if self.trials_left is not None:  # the run's last trial: no peer will come after it
            self.trials_left -= 1
            self.closing = self.closing or self.trials_left <= 0
        candidate = self.space.suggest(trial)
        cheap = self.cheap(candidate)
        violations = cheap.violations(self.deploy, self.margin_sigmas)
        key = self.cache_key(candidate)
        recipe = plan(candidate, settings=self.compression, proxy=self.settings).to_dict()
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
        elif (earlier := late.standing_down(trial.study, trial)) is not None:
            outcome.promotion = f"stood down: trial {earlier} continues the same candidate"
            raise optuna.TrialPruned(outcome.promotion)
        elif (
            records.continues(trial) is None
            and (previous := self._trained_before(trial.study, key)) is not None
        ):
            outcome.reuse(previous)
            return previous.values[0], metrics["decode_ms"], metrics["memory_mb"]
        elif not self.proxy.trains:
            # Training-free proxy: `trained` here means "scored by the selected proxy".
            outcome.trained = True
            metrics["bpb"] = metrics["bpb_uncompressed"] = self.proxy.score(candidate.arch, None)
            metrics["quality_proxy"] = self.proxy.name  # a rank score, not bits per byte
        else:
            try:
                rung0 = Ladder(self, trial, candidate, cheap, outcome).climb()
            except ProxyDiverged as err:
                outcome.fail_reason = str(err)
                raise
            return rung0, metrics["decode_ms"], metrics["memory_mb"]
        return metrics["bpb"], metrics["decode_ms"], metrics["memory_mb"]

    def stop_rule(
        self, study: optuna.Study, cheap: CheapMetrics
    ) -> Callable[[int, float], str | None] | None:
        """Early stopping's test at a checkpoint of rung 0: why to stop there, or None."""
        if self.early_stop is None:
            return None
        rule = self.early_stop
        stored = records.reference(study)
        reference = Reference.from_dict(stored) if stored else None

        def stop(step: int, bpb: float) -> str | None:
            finished = finished_trials(study)
            return rule.should_stop(
                step, bpb, cheap.decode.mean, cheap.memory.mean, finished, reference
            )

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
