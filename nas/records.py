"""The trial record: what each trial and study of a search stores, read and written only here.

Optuna keeps a trial's objective values, parameters and constraints; the engine keeps the rest in
user attributes, whose keys and defaults this module alone knows:

| attribute | written | what it holds |
|---|---|---|
| `arch`, `compression` | before training | the candidate (`ArchConfig`, `CompressionConfig`) |
| `recipe` | before, then measured | the compression recipe (`nas.compression.Recipe`) |
| `cache_key` | before training | hash of the candidate and of everything that decides its result |
| `trained` | at the end | true only when the proxy really scored this candidate (absent = false) |
| `metrics` | at the end | bpb (compressed), bpb_uncompressed, decode_ms, memory_mb, params... |
| `skipped` | at the end | why an infeasible candidate was not trained |
| `cached_from` | at the end | the earlier trial whose training this one reuses (same values) |
| `learning_curve`, `checkpoints` | at the end | (step, train loss); (step, held-out bpb, seconds) |
| `train_seconds`, `train_tokens` | at the end | what the proxy run cost |
| `early_stopped`, `fail_reason` | at the end | why a trial stopped early or failed |
| `rungs` | after each rung | per rung: steps, tokens, seeds, bpb per seed (compressed, and not) |
| `rung`, `final` | at the end | the highest rung reached; whether that is the study's top rung |
| `promotion` | at the end | why the candidate stopped where it did (its rank, or the clock) |
| `worker`, `requeued` | by the pool | who runs it (host, pid, start time); why a copy was queued |
| `continues` | when queued | the trial whose candidate this one takes further (late promotion) |

Study attributes: `identity` (what a resume must match), `hypervolume_reference`, `device`,
`target`, and for a prune study `parent` (its directory, fingerprint, family, shape and its own
held-out bits per byte: the reference its children are read against, measured once per study).

A trial's Optuna values are its rung-0 objectives (bits per byte after the shortest run, decode
ms, memory MB): the one measurement every candidate has, which every sampler learns from
(`learns`). The front, the hypervolume, pareto.json, the report and export judge only candidates
measured at the study's top rung (`counts`, `final`), on `metrics.bpb` (`nas.fidelity.judge`).
Studies from before rungs existed hold one rung per trial: every trained trial is final.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.arch import Candidate

OBJECTIVES = ("bpb", "decode_ms", "memory_mb")  # the study's values, all minimised
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.RUNNING)  # measured, or measuring


# -- reading ---------------------------------------------------------------------------------------
def is_feasible(trial: FrozenTrial) -> bool:
    """Within every device limit. Constraints are set per trial with `Trial.set_constraint`
    (Optuna 5 samplers read these; the sampler-level `constraints_func` is deprecated)."""
    return all(v <= 0 for v in trial.constraints.values())


def is_trained(trial: FrozenTrial) -> bool:
    """The proxy really scored this candidate (a skipped or stopped trial was not)."""
    return bool(trial.user_attrs.get("trained", False))


def learns(trial: FrozenTrial) -> bool:
    """A trial a sampler's surrogate and early stopping learn from: finished, within the device
    limits and trained (its values are rung 0's, which every candidate has)."""
    return (
        trial.state == TrialState.COMPLETE
        and trial.values is not None
        and is_feasible(trial)
        and is_trained(trial)
    )


def is_final(trial: FrozenTrial) -> bool:
    """Measured at the study's top rung (absent: a study from before rungs, one rung each)."""
    return bool(trial.user_attrs.get("final", True))


def counts(trial: FrozenTrial) -> bool:
    """A trial the front, the hypervolume and export count: one that `learns`, measured at the
    study's top rung."""
    return learns(trial) and is_final(trial)


def cached_from(trial: FrozenTrial) -> int | None:
    return None if (value := trial.user_attrs.get("cached_from")) is None else int(value)


def continues(trial: FrozenTrial | optuna.Trial) -> int | None:
    """The trial whose candidate this one takes further (`nas.search.late`), or None."""
    return None if (value := trial.user_attrs.get("continues")) is None else int(value)


def continued(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that a running or finished continuation now stands for."""
    return {n for t in trials if t.state in LIVE and (n := continues(t)) is not None}


def stands_for_itself(trial: FrozenTrial) -> bool:
    """A counted trial that is reported on its own: not a reuse of an earlier trial's training
    (`cached_from`: same configuration and values, so the earlier trial stands for both)."""
    return counts(trial) and cached_from(trial) is None


def cache_key(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get("cache_key")


def worker(trial: FrozenTrial) -> dict[str, Any] | None:
    """The process that claimed the trial (`nas.search.owners.owner_record`), if any."""
    owner = trial.user_attrs.get("worker")
    return owner if isinstance(owner, dict) else None


@dataclass(frozen=True)
class TrialRecord:
    """A typed view of one trial."""

    number: int
    state: TrialState
    values: tuple[float, ...] | None
    feasible: bool
    trained: bool
    cached_from: int | None
    rung: int
    arch: dict[str, Any]
    compression: dict[str, Any]
    metrics: dict[str, Any]
    recipe: dict[str, Any] | None
    learning_curve: list[Any]
    checkpoints: list[Any]
    skipped: str | None
    early_stopped: dict[str, Any] | None
    fail_reason: str | None
    requeued: str | None
    train_seconds: float | None
    train_tokens: int | None
    rungs: list[dict[str, Any]]
    final: bool
    promotion: str | None
    shrink: dict[str, Any] | None = None  # trained at `shrink.trained`, then pruned to `arch`
    continues: int | None = None  # a late promotion of that trial's candidate

    @property
    def finished(self) -> bool:
        return self.state == TrialState.COMPLETE and self.values is not None

    @property
    def counts(self) -> bool:
        return self.finished and self.feasible and self.trained and self.final

    def rung_result(self, rung: int) -> dict[str, Any] | None:
        return next((r for r in self.rungs if r["rung"] == rung), None)

    @property
    def stands_for_itself(self) -> bool:
        return self.counts and self.cached_from is None


def read(trial: FrozenTrial) -> TrialRecord:
    """The record of `trial` (absent attributes get their documented defaults)."""
    attrs = trial.user_attrs
    return TrialRecord(
        number=trial.number,
        state=trial.state,
        values=None if trial.values is None else tuple(trial.values),
        feasible=is_feasible(trial),
        trained=is_trained(trial),
        cached_from=cached_from(trial),
        rung=int(attrs.get("rung", 0)),
        arch=dict(attrs.get("arch") or {}),
        compression=dict(attrs.get("compression") or {}),
        metrics=dict(attrs.get("metrics") or {}),
        recipe=attrs.get("recipe"),
        learning_curve=list(attrs.get("learning_curve") or []),
        checkpoints=list(attrs.get("checkpoints") or []),
        skipped=attrs.get("skipped"),
        early_stopped=attrs.get("early_stopped"),
        fail_reason=attrs.get("fail_reason"),
        requeued=attrs.get("requeued"),
        train_seconds=attrs.get("train_seconds"),
        train_tokens=attrs.get("train_tokens"),
        rungs=list(attrs.get("rungs") or []),
        final=is_final(trial),
        promotion=attrs.get("promotion"),
        shrink=attrs.get("shrink"),
        continues=continues(trial),
    )


# -- writing ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a trial measured, stored in one write when it ends (also on failure or a stop).

    Fields left None are not written, so a trial's record holds only what it measured."""

    trained: bool | None = None
    metrics: dict[str, Any] | None = None
    skipped: str | None = None
    cached_from: int | None = None
    recipe: dict[str, Any] | None = None
    learning_curve: list[Any] | None = None
    checkpoints: list[Any] | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    early_stopped: dict[str, Any] | None = None
    fail_reason: str | None = None
    rungs: list[dict[str, Any]] | None = None
    rung: int | None = None
    final: bool | None = None
    promotion: str | None = None

    def attrs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def reuse(self, earlier: FrozenTrial) -> None:
        """Take an earlier trial's training result (same cache key): a cached trial."""
        before = read(earlier)
        self.trained = True
        self.cached_from = before.number
        self.recipe = before.recipe
        self.learning_curve = before.learning_curve
        self.checkpoints = before.checkpoints
        if before.rungs:  # a study from before rungs stored none
            self.rungs, self.rung = before.rungs, before.rungs[-1]["rung"]
            self.final, self.promotion = before.final, before.promotion
        # Its quality (every rung's, seeds, compression) with this trial's own prices (the same).
        self.metrics = {**before.metrics, **(self.metrics or {})}
        self.metrics.setdefault("bpb_uncompressed", self.metrics["bpb"])


def store_candidate(
    trial: optuna.Trial,
    candidate: Candidate,
    *,
    constraints: Mapping[str, float],
    recipe: Mapping[str, Any] | None = None,
    key: str | None = None,
) -> None:
    """What the trial is, stored before it trains (a running trial shows its candidate), with
    its constraint violations; `key` names everything that decides its result (default: the
    candidate alone)."""
    attrs = {
        "arch": candidate.arch.to_dict(),
        "compression": candidate.compression.to_dict(),
        "recipe": dict(recipe or {}),
        "cache_key": key or candidate.key(),
    }
    if candidate.shrink is not None:  # trained at another shape, then pruned to `arch`
        attrs["shrink"] = candidate.shrink.to_dict()
    _write(trial, attrs, constraints)


def store_outcome(trial: optuna.Trial, outcome: Outcome) -> None:
    _write(trial, outcome.attrs())


def store_rungs(trial: optuna.Trial, rungs: list[dict[str, Any]]) -> None:
    """The rungs measured so far, written as each one finishes: a killed worker's retry keeps
    them (`requeued_attrs` copies them), so no finished rung is lost."""
    _write(trial, {"rungs": list(rungs)})


def carried_rungs(trial: optuna.Trial) -> list[dict[str, Any]]:
    """Rungs a re-queued trial's earlier attempt finished (empty for a fresh trial)."""
    return list(trial.user_attrs.get("rungs") or [])


def store_worker(trial: optuna.Trial, owner: Mapping[str, Any]) -> None:
    trial.set_user_attr("worker", dict(owner))


def continuation_attrs(trial: FrozenTrial, rung: int) -> dict[str, Any]:
    """A late promotion's attributes: whom it continues, the rungs it carries from `rung` down."""
    return {"continues": trial.number, "rungs": [r for r in read(trial).rungs if r["rung"] <= rung]}


def requeued_attrs(trial: FrozenTrial, reason: str) -> dict[str, Any]:
    """The user attributes of a re-queued copy of `trial`: its candidate, and why."""
    return {**trial.user_attrs, "requeued": reason}


def _write(
    trial: optuna.Trial, attrs: Mapping[str, Any], constraints: Mapping[str, float] | None = None
) -> None:
    """Set a running trial's user attributes and constraints in one storage transaction.

    Optuna's API commits once per attribute and reads the trial back before each constraint; a
    trial here sets about a dozen, and with a thousand stored trials those round trips were a
    third of the engine's time per trial. On an RDB storage (SQLite, PostgreSQL) they go through
    the storage's own row writer in one transaction, on a journal file in one append (one lock,
    one fsync); other storages take them one at a time. Uses Optuna 5 internals (optuna<6 is
    pinned); `tests/test_records.py` checks that both paths store the same trial.
    """
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    if not attrs and not constraints:
        return
    constraints = {key: float(value) for key, value in (constraints or {}).items()}
    system = {f"{_CONSTRAINTS_KEY}:{key}": value for key, value in constraints.items()}
    storage = trial.storage
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(backend, optuna.storages.RDBStorage):
        with _create_scoped_session(backend.scoped_session) as session:
            for model, values in (
                (models.TrialUserAttributeModel, attrs),
                (models.TrialSystemAttributeModel, system),
            ):
                for key, value in values.items():
                    backend._set_trial_attr_without_commit(
                        session, model, trial._trial_id, key, value
                    )
    elif isinstance(backend, optuna.storages.JournalStorage):
        _journal_write(backend, trial._trial_id, attrs, system)
    else:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        return
    # The trial's own view, as `Trial.set_user_attr` and `Trial.set_constraint` keep it.
    trial._cached_frozen_trial.user_attrs.update(attrs)
    trial._cached_frozen_trial.system_attrs.update(system)


def _journal_write(
    storage: optuna.storages.JournalStorage,
    trial_id: int,
    attrs: Mapping[str, Any],
    system: Mapping[str, Any],
) -> None:
    """The journal's own log entries, one per attribute as its `set_trial_*_attr` writes them,
    appended in one locked, fsynced write instead of one each."""
    from optuna.storages.journal._storage import JournalOperation

    worker_id = storage._replay_result.worker_id
    logs = [
        {"op_code": op, "worker_id": worker_id, "trial_id": trial_id, name: {key: value}}
        for op, name, values in (
            (JournalOperation.SET_TRIAL_USER_ATTR, "user_attr", attrs),
            (JournalOperation.SET_TRIAL_SYSTEM_ATTR, "system_attr", system),
        )
        for key, value in values.items()
    ]
    with storage._thread_lock:
        storage._backend.append_logs(logs)
        storage._sync_with_backend()


# -- the study's own attributes --------------------------------------------------------------------
def identity(study: optuna.Study) -> dict[str, Any] | None:
    """What the study was started with; a resume must match it (`nas.study.open`)."""
    return study.user_attrs.get("identity")


def store_identity(study: optuna.Study, value: Mapping[str, Any]) -> None:
    study.set_user_attr("identity", dict(value))


def reference(study: optuna.Study) -> dict[str, float] | None:
    """The hypervolume reference point (`nas.objectives.hypervolume.Reference.to_dict`)."""
    return study.user_attrs.get("hypervolume_reference") or None


def store_reference(study: optuna.Study, value: Mapping[str, float]) -> None:
    study.set_user_attr("hypervolume_reference", dict(value))


def target(study: optuna.Study) -> dict[str, Any] | None:
    """The training length the study judges its front at (`nas.fidelity.judge`)."""
    value = study.user_attrs.get("target")
    return dict(value) if value else None


def store_target(study: optuna.Study, value: Mapping[str, Any]) -> None:
    study.set_user_attr("target", dict(value))


def device(study: optuna.Study) -> dict[str, Any] | None:
    """The device limits and the latency predictor's provenance the study was priced with."""
    value = study.user_attrs.get("device")
    return dict(value) if value else None


def store_device(study: optuna.Study, value: Mapping[str, Any]) -> None:
    study.set_user_attr("device", dict(value))


def parent(study: optuna.Study) -> dict[str, Any] | None:
    """A prune study's parent and its own held-out bits per byte (`bpb`); None otherwise."""
    value = study.user_attrs.get("parent")
    return dict(value) if value else None


def store_parent(study: optuna.Study, value: Mapping[str, Any]) -> None:
    study.set_user_attr("parent", dict(value))
