"""One candidate's climb through the rungs: train, judge after a decay branch, compress, and go on
only when the promotion rule says so (`nas.fidelity`).

The climb runs inside its trial, on one worker, with the model in memory: nothing is shared
through a filesystem, so workers on many machines need only the study's database. Every finished
rung is written to the trial at once (`nas.records.store_rungs`); a retried trial (its worker
died) keeps those results, retrains the same trunk (batches are a function of seed and step) and
carries on. A candidate that stays at a rung may go on later, as a new trial that carries its
rungs (`nas.search.late`). At the top rung the candidate is trained again with each further seed,
from its start (scratch, or the child pruned from a parent: `TrialObjective.start_run` makes every
run), so that its quality carries a paired seed spread.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from nas import records
from nas.arch import Candidate
from nas.compression import score_compressed
from nas.fidelity.noise import mean_sd
from nas.fidelity.promotion import promote
from nas.objectives.cheap import CheapMetrics
from nas.objectives.hypervolume import Reference
from nas.quality.training import ProxyDiverged, ProxyResult, ProxyRun, bits_per_byte, rung_span
from nas.search import late
from nas.search.late import GRACE_S

if TYPE_CHECKING:
    from nas.search.trial import TrialObjective


class Ladder:
    """The rungs of one trial; `climb()` fills the trial's `outcome` and returns its rung-0
    quality (the trial's value, which every sampler learns from)."""

    def __init__(
        self,
        objective: TrialObjective,
        trial: optuna.Trial,
        candidate: Candidate,
        cheap: CheapMetrics,
        outcome: records.Outcome,
    ) -> None:
        self.objective, self.trial, self.candidate = objective, trial, candidate
        self.cheap, self.outcome = cheap, outcome
        self.rungs = objective.rungs
        self.settings = objective.settings
        self.seeds = [objective.seed + i for i in range(self.rungs.seeds)]
        self.carried = {r["rung"]: r for r in records.carried_rungs(trial)}
        self.continues = records.continues(trial)
        self.results: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.rung0: ProxyResult | None = None

    def climb(self) -> float:
        run = self.objective.start_run(self.candidate, self.seeds[0])
        self._rung0_checkpoints(run)
        last_carried = max(self.carried, default=-1)
        for rung in range(self.rungs.count):
            run.advance(self._trunk(rung))
            self.results.append(self.carried.get(rung) or self._measure(run, rung))
            records.store_rungs(self.trial, self.results)
            if rung == 0:
                self.rung0 = self._rung0_result(run)
            if rung == self.rungs.top:
                break
            if rung < last_carried:
                continue  # it went on from here before (this trial carries the later rungs)
            promoted, why = self._promotion(rung, run)
            if not promoted:
                self.outcome.promotion = f"stayed at rung {rung}: {why}"
                break
            is_late = self.continues is not None and rung == last_carried
            later = f" later, continuing trial {self.continues}" if is_late else ""
            self.outcome.promotion = f"promoted from rung {rung}{later}: {why}"
        if len(self.results) == self.rungs.count and len(self.seeds) > 1:
            self.results[-1] = self._more_seeds(self.results[-1])
            records.store_rungs(self.trial, self.results)
        self._finish(run)
        self._queue_late_promotion()
        return self._rung0_value()

    # -- one rung ---------------------------------------------------------------------------------
    def _trunk(self, rung: int) -> int:
        """Where rung `rung`'s measurement starts: its decay branch (wsd), or its end (cosine,
        whose single run decays to its own end)."""
        return rung_span(self.rungs, self.settings, rung)[0]

    def _decay(self, rung: int) -> int:
        return rung_span(self.rungs, self.settings, rung)[1]

    def _measure(self, run: ProxyRun, rung: int, seed_index: int = 0) -> dict[str, Any]:
        """Decay a branch off `run`'s trunk, measure it, compress it, measure again."""
        decay = self._decay(rung)
        branch = run.branch(decay) if decay else run  # cosine: the run is its own end
        trained = branch.evaluate()
        compressed, recipe = score_compressed(
            branch.model,
            self.candidate,
            self.objective.data,
            self.settings,
            settings=self.objective.compression,
            seed=self.seeds[seed_index],
        )
        if compressed is not None and not math.isfinite(compressed):
            self.outcome.fail_reason = f"compressed model's held-out bits per byte is {compressed}"
            raise ProxyDiverged(self.outcome.fail_reason)
        bpb = trained if compressed is None else compressed
        self.outcome.recipe = recipe.to_dict()
        if seed_index == 0:
            self.outcome.learning_curve = branch.curve
        return self._entry(rung, [self.seeds[seed_index]], [bpb], [trained])

    def _more_seeds(self, top: dict[str, Any]) -> dict[str, Any]:
        """The top rung again with each further (paired) seed, from the candidate's start."""
        bpbs, trained = list(top["bpb_seeds"]), list(top["bpb_uncompressed_seeds"])
        for index in range(len(top["seeds"]), len(self.seeds)):
            run = self.objective.start_run(self.candidate, self.seeds[index])
            run.advance(self._trunk(self.rungs.top))
            more = self._measure(run, self.rungs.top, index)
            bpbs += more["bpb_seeds"]
            trained += more["bpb_uncompressed_seeds"]
        return self._entry(self.rungs.top, self.seeds, bpbs, trained)

    def _entry(
        self, rung: int, seeds: list[int], bpbs: list[float], trained: list[float]
    ) -> dict[str, Any]:
        """One rung's result as the trial stores it: per seed and the paired seeds' mean, and
        the candidate's prices (so that other workers' promotions can read a running trial)."""
        steps = self.rungs.total(rung)
        return {
            "rung": rung,
            "steps": steps,
            "tokens": steps * self.settings.batch_size * self.settings.seq_len,
            "seeds": list(seeds),
            "bpb_seeds": [float(b) for b in bpbs],
            "bpb_uncompressed_seeds": [float(b) for b in trained],
            "bpb": float(np.mean(bpbs)),
            "bpb_uncompressed": float(np.mean(trained)),
            "decode_ms": self.cheap.decode.mean,
            "memory_mb": self.cheap.memory.mean,
            "seconds": round(time.perf_counter() - self.started, 3),
        }

    # -- rung 0: early stopping and the quality proxy's checkpoints --------------------------------
    def _rung0_checkpoints(self, run: ProxyRun) -> None:
        """Measure the trunk where early stopping or the scorer asks (within rung 0's trunk)."""
        marks = set(self.objective.proxy.checkpoint_steps(self.settings))
        rule = self.objective.early_stop
        if rule is not None:
            marks.update(rule.steps(self.settings.steps))
        # A carried rung 0 was judged already: its retraining is not stopped again.
        stop = None if 0 in self.carried else self.objective.stop_rule(self.trial.study, self.cheap)
        self.checkpoints: list[tuple[int, float, float]] = []
        for mark in sorted(m for m in marks if 0 < m < self._trunk(0)):
            run.advance(mark)
            bpb = bits_per_byte(run.model, self.objective.data, self.settings)
            self.checkpoints.append((mark, bpb, time.perf_counter() - self.started))
            reason = stop(mark, bpb) if stop is not None and math.isfinite(bpb) else None
            if reason is not None:
                self.outcome.trained = False
                self.outcome.checkpoints = self.checkpoints
                self.outcome.learning_curve = run.curve
                self.outcome.early_stopped = {"step": mark, "bpb": bpb, "reason": reason}
                self.outcome.train_tokens = run.tokens
                self.outcome.train_seconds = round(time.perf_counter() - self.started, 3)
                self.outcome.metrics["bpb_partial"] = bpb  # type: ignore[index]
                raise optuna.TrialPruned(f"stopped early: {reason}")

    def _rung0_result(self, run: ProxyRun) -> ProxyResult:
        entry = self.results[0]
        bpb = entry["bpb_uncompressed_seeds"][0]
        checkpoints = [*self.checkpoints, (entry["steps"], bpb, entry["seconds"])]
        if not self.checkpoints:
            checkpoints = []
        return ProxyResult(bpb, run.loss, entry["seconds"], entry["tokens"], run.curve, checkpoints)

    def _rung0_value(self) -> float:
        """Rung 0's quality as the scorer sees it (default: compressed bits per byte)."""
        entry, proxy = self.results[0], self.objective.proxy
        compressed, trained = entry["bpb_seeds"][0], entry["bpb_uncompressed_seeds"][0]
        if proxy.name == "train" or self.rung0 is None:
            return compressed
        # Another proxy's score (e.g. extrapolated bpb) is the objective; a compression penalty
        # measured on the trained model carries over as a difference.
        return proxy.score(self.candidate.arch, self.rung0) + (compressed - trained)

    # -- promotion ---------------------------------------------------------------------------------
    def _promotion(self, rung: int, run: ProxyRun) -> tuple[bool, str]:
        """Whether this candidate goes on to rung + 1: the clock first, then its rank."""
        deadline = self.objective.deadline
        if deadline is not None:
            per_step = (time.perf_counter() - self.started) / max(1, run.step)
            cost = self.rungs.extra_cost(rung + 1)
            if rung + 1 == self.rungs.top:
                cost += (len(self.seeds) - 1) * self.rungs.total(self.rungs.top)
            if time.time() + per_step * cost > deadline + GRACE_S:
                return False, late.CLOCK
        points, me = self._peers(rung)
        stored = records.reference(self.trial.study)
        reference = Reference.from_dict(stored) if stored else late.loose_reference(points)
        return promote(me, points, reference, self.rungs.eta, self.objective.closing)

    def _peers(self, rung: int) -> tuple[np.ndarray, int]:
        """(bpb at `rung`, decode, memory) of every candidate measured there so far
        (`late.field`), this one last."""
        trials = self.trial.study.get_trials(deepcopy=False)
        others, _ = late.field(trials, rung, without=self.trial.number)
        mine = self.results[rung]
        rows = [*others.tolist(), [mine["bpb_seeds"][0], mine["decode_ms"], mine["memory_mb"]]]
        return np.array(rows, dtype=float), len(rows) - 1

    def _queue_late_promotion(self) -> None:
        """Each finished climb gives a candidate that stayed earlier its chance to go on now."""
        late.queue_late_promotion(
            self.trial.study,
            self.rungs,
            deadline=self.objective.deadline,
            grace_s=GRACE_S,
            round_up=self.objective.closing,
        )

    # -- the record --------------------------------------------------------------------------------
    def _finish(self, run: ProxyRun) -> None:
        top = self.results[-1]
        metrics = self.outcome.metrics
        assert metrics is not None
        bpb, bpb_sd = mean_sd(top["bpb_seeds"])
        deltas = [
            c - t for c, t in zip(top["bpb_seeds"], top["bpb_uncompressed_seeds"], strict=True)
        ]
        delta, delta_sd = mean_sd(deltas)
        metrics.update(
            bpb=bpb,
            bpb_sd=bpb_sd,
            bpb_uncompressed=float(np.mean(top["bpb_uncompressed_seeds"])),
            seeds=len(top["seeds"]),
            compression_delta=delta,
            compression_delta_sd=delta_sd,
            bpb_rung0=self.results[0]["bpb_seeds"][0],
            rung=top["rung"],
            train_loss=run.loss,
            quality_proxy=self.objective.proxy.name,
        )
        self.outcome.trained = True
        self.outcome.rungs = self.results
        self.outcome.rung = top["rung"]
        self.outcome.final = top["rung"] == self.rungs.top
        self.outcome.checkpoints = self.rung0.checkpoints if self.rung0 else []
        self.outcome.train_seconds = round(time.perf_counter() - self.started, 3)
        self.outcome.train_tokens = sum(r["tokens"] * len(r["seeds"]) for r in self.results)
