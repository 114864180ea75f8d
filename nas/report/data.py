"""What a report shows about one study, read from the study alone (its trials and user attrs).

The device limits and hypervolume reference are study user attrs written by the search; a study
without them falls back to its `pareto.json` header, then to the hardware file its identity names.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from nas import records
from nas.arch import is_compressed, label
from nas.config.compose import load_settings
from nas.objectives.hypervolume import Reference, hypervolume_history
from nas.objectives.pareto import pareto_entries
from nas.objectives.reach import Reach, device_reach
from nas.records import OBJECTIVES
from nas.study.lookup import StudyRef

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass(frozen=True)
class Point:
    """One finished trial, as plotted."""

    trial: int
    bpb: float
    decode_ms: float
    memory_mb: float
    feasible: bool
    trained: bool
    pareto: bool
    compressed: bool
    label: str  # one line: shape and compression
    rung: int = 0  # the highest rung it reached (front members: the top rung)
    sd: float = 0.0  # seed spread of `bpb` (front members: of the judged quality)


@dataclass
class StudyData:
    """Everything the report draws for one study."""

    name: str
    hardware: str
    limits: dict[str, float]
    calibrated: bool | None  # None: the study does not say
    provenance: str
    reference: Reference | None
    points: list[Point]
    front: list[dict[str, Any]]  # pareto.json entries, best bpb first
    hv_history: list[tuple[int, float]]
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    importance_note: str = ""
    export_prefix: str = ""  # `python -m nas.export` arguments shared by every member
    reach: Reach | None = None  # how close the candidates come to the device's limits

    @property
    def hypervolume(self) -> float | None:
        if self.reference is None:
            return None
        return self.hv_history[-1][1] if self.hv_history else 0.0

    def export_command(self, trial: int) -> str:
        out = f"exports/{self.name}-{trial}"
        return f"python -m nas.export {self.export_prefix} trial={trial} out={out}"


def collect(study: optuna.Study, ref: StudyRef) -> StudyData:
    """Read one study into what the report draws."""
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    front = pareto_entries(study) if trials else []
    members = {e["trial"]: e["quality"] for e in front}  # as pareto.json lists it
    taken = records.continued(trials)  # drawn once: where its late promotion took it
    points = [
        _point(r, members.get(r.number))
        for r in map(records.read, trials)
        if r.values and r.number not in taken
    ]
    device = _device(study, ref)
    reference = _reference(study, device, points)
    data = StudyData(
        name=ref.name,
        hardware=str(device.get("hardware", "?")),
        limits=dict(device.get("device_limits", {})),
        calibrated=device.get("latency_predictor", {}).get("calibrated"),
        provenance=str(device.get("latency_predictor", {}).get("provenance", "not recorded")),
        reference=reference,
        points=points,
        front=front,
        hv_history=hypervolume_history(trials, reference, records.target(study))
        if reference
        else [],
        export_prefix=_export_prefix(ref),
    )
    data.importances, data.importance_note = importances(study, trials)
    limits = data.limits
    if limits.get("max_decode_ms") and limits.get("max_memory_mb"):
        data.reach = device_reach(
            trials,
            max_decode_ms=limits["max_decode_ms"],
            max_memory_mb=limits["max_memory_mb"],
            pruned=records.parent(study) is not None,
        )
    return data


def _point(record: records.TrialRecord, judged: dict[str, Any] | None) -> Point:
    """A trial as plotted: front members at their judged quality with its spread; the others at
    the highest rung they reached (the rung is in the hover), never at a lower rung's value."""
    values, metrics = record.values or (float("nan"),) * 3, record.metrics
    bpb = judged["bpb"] if judged else float(metrics.get("bpb", values[0]))
    sd = judged["sd"] if judged else float(metrics.get("bpb_sd", 0.0))
    return Point(
        trial=record.number,
        bpb=bpb,
        decode_ms=values[1],
        memory_mb=values[2],
        feasible=record.feasible,
        trained=record.trained,
        pareto=judged is not None,
        compressed=is_compressed(record.compression),
        label=label(record.arch, record.compression),
        rung=record.rungs[-1]["rung"] if record.rungs else 0,
        sd=sd if math.isfinite(sd) else 0.0,
    )


def importances(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial]
) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's parameter importances (its default evaluator) per objective, over the feasible,
    trained trials; a note instead when there are too few of them."""
    usable = [t for t in trials if records.counts(t) and t.params]
    if len(usable) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (
            f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} feasible trained trials "
            f"({len(usable)} so far)"
        )
    # An in-memory copy holding only these trials: importances of untrained (uniform-bpb)
    # candidates would measure the device limit, not the architecture.
    subset = optuna.create_study(directions=study.directions)
    subset.add_trials(usable)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(OBJECTIVES):
        try:
            scores = optuna.importance.get_param_importances(
                subset, target=lambda t, i=i: t.values[i]
            )
        except (ValueError, RuntimeError) as err:  # e.g. a constant objective
            log.debug("importance of %s: %s", name, err)
            continue
        out[name] = {k: float(v) for k, v in scores.items() if math.isfinite(v)}
    note = f"Optuna's default evaluator over {len(usable)} feasible trained trials"
    return out, note


def _device(study: optuna.Study, ref: StudyRef) -> dict[str, Any]:
    stored = records.device(study)
    if stored:
        return stored
    header = ref.out_dir / "pareto.json"
    if header.is_file():
        try:
            info = json.loads(header.read_text())
            return {
                k: info[k] for k in ("hardware", "device_limits", "latency_predictor") if k in info
            }
        except (OSError, ValueError):
            log.debug("unreadable %s", header, exc_info=True)
    name = (records.identity(study) or {}).get("hardware")
    if not name:
        return {}
    hardware = load_settings([f"hardware={name}", "budget=smoke"]).hardware
    return {
        "hardware": hardware.name,
        "device_limits": {
            "max_memory_mb": hardware.deploy.max_memory_mb,
            "max_decode_ms": hardware.deploy.max_decode_ms,
        },
    }


def _reference(
    study: optuna.Study, device: dict[str, Any], points: list[Point]
) -> Reference | None:
    stored = records.reference(study)
    if stored:
        return Reference.from_dict(stored)
    limits = device.get("device_limits", {})
    untrained = [p.bpb for p in points if not p.trained]  # recorded as the uniform model's bpb
    if not untrained or "max_decode_ms" not in limits or "max_memory_mb" not in limits:
        return None
    return Reference(
        bpb=max(untrained), decode_ms=limits["max_decode_ms"], memory_mb=limits["max_memory_mb"]
    )


def _export_prefix(ref: StudyRef) -> str:
    parts = [f"study.name={ref.name}"]
    default_storage = f"sqlite:///{ref.runs_dir}/{ref.name}/study.db"
    if str(ref.runs_dir) != "runs":
        parts.append(f"runs_dir={ref.runs_dir}")
    if ref.storage != default_storage:
        parts.append(f"study.storage={ref.storage}")
    return " ".join(parts)
