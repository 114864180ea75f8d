"""Early stopping measured: proxy compute saved against hypervolume lost, on the same seeds.

    python -m nas.bench early_stop [hardware=pixel8] [budget=cpu] [sampler=tpe] [seeds=3]
                                   [trials=30] [chunk=8]
                                   [fractions=0.5] [margin=0.0] [min_gain=0.001]
                                   [quantile=0.0] [runs_dir=runs]

For each seed a real study (`nas.search`, the budget's proxy, compression included) is run to
`trials` trials with held-out bits per byte recorded at 1/4, 1/2 and 3/4 of every proxy run and a
stopping rule that never fires. The early-stopping rule (`nas.quality.early_stop`) is then
replayed on those trials in their order: a trial is stopped at the first checkpoint where a trial
that finished before it (and was not itself stopped) is no slower, no larger and had a lower bits
per byte at that step.
Reported per seed: proxy compute (training steps plus held-out evaluations, in step equivalents)
with and without stopping, and the hypervolume of the remaining trials against all of them. The
replay keeps the sampler's trajectory fixed; what a live study would sample after a stop is not
part of this measure. The studies resume, so `chunk=N` (new trials per invocation) lets the bench
run in pieces; outputs go to `<runs_dir>/bench/early_stop/` and `.../early_stop.json`.
"""

from __future__ import annotations

import json
import logging
import statistics
import warnings
from pathlib import Path
from typing import Any

import optuna

from nas import records
from nas.bench import split_options
from nas.config.compose import load_settings
from nas.files import atomic_write
from nas.objectives.hypervolume import Reference, hypervolume
from nas.quality.early_stop import EarlyStopping, Finished, finished
from nas.search.run import run_search

DEFAULTS: dict[str, Any] = {
    "seeds": 3,
    "trials": 30,
    "chunk": 8,
    "fractions": "0.5",
    "margin": 0.0,
    "min_gain": 0.001,  # < 0: dominance rule only
    "quantile": 0.0,
}
RECORDED = (0.25, 0.5, 0.75)  # checkpoints measured in every bench trial
NEVER = 1e9  # a margin no bits-per-byte difference reaches: the rule records but never stops


def replay(
    trials: list[optuna.trial.FrozenTrial],
    rule: EarlyStopping,
    steps: int,
    eval_cost: float,
    reference: Reference,
) -> dict[str, Any]:
    """Apply `rule` to finished `trials` in order; compute and hypervolume with and without it.

    Args:
        eval_cost: one held-out evaluation in training-step equivalents.
    """
    checks = rule.steps(steps)
    done: list[Finished] = []
    full_cost = kept_cost = 0.0
    all_points, kept_points, stopped = [], [], []
    for t in sorted(trials, key=lambda t: t.number):
        if not records.learns(t) or records.cached_from(t) is not None:
            continue
        record = finished(records.read(t))
        full_cost += steps + eval_cost  # without stopping: train, then one final evaluation
        all_points.append(t.values)
        stop_at = None
        for i, step in enumerate(checks):
            bpb = record.checkpoints.get(step)
            if bpb is not None and rule.should_stop(
                step, bpb, record.decode_ms, record.memory_mb, done, reference
            ):
                stop_at, spent = step, step + (i + 1) * eval_cost
                break
        if stop_at is None:
            kept_cost += steps + (len(checks) + 1) * eval_cost
            kept_points.append(t.values)
            done.append(record)
        else:
            kept_cost += spent
            stopped.append((t.number, stop_at))
    hv_all = hypervolume(all_points, reference)
    hv_kept = hypervolume(kept_points, reference)
    return {
        "trained": len(all_points),
        "stopped": stopped,
        "compute_saved": 1.0 - kept_cost / full_cost if full_cost else 0.0,
        "hv_all": hv_all,
        "hv_kept": hv_kept,
        "hv_lost": 1.0 - hv_kept / hv_all if hv_all else 0.0,
    }


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, DEFAULTS, budget="cpu")
    base = load_settings(overrides)
    out_root = Path(base.runs_dir) / "bench" / "early_stop"
    cache = base.cache_dir
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    studies = []
    budget_left = opts["chunk"]
    # Studies of a sampler other than TPE (the default until 2026-11-29) get its name as suffix.
    sampler = next((o.partition("=")[2] for o in overrides if o.startswith("sampler=")), "")
    suffix = "" if sampler == "tpe" else f"-{sampler or 'default'}"
    for seed in range(opts["seeds"]):
        name = f"es-{base.hardware.name}-{base.budget.name}-seed{seed}{suffix}"
        cfg_overrides = [
            *overrides,
            f"runs_dir={out_root}",
            f"cache_dir={cache}",
            f"study.name={name}",
            f"seed={seed}",
            "quiet=true",
            "proxy=train",
            "proxy.early_stop.enabled=true",
            f"proxy.early_stop.checkpoints=[{','.join(map(str, RECORDED))}]",
            f"proxy.early_stop.margin={NEVER}",
            "proxy.early_stop.min_gain=null",  # record only: no live stopping in these runs
        ]
        storage = f"sqlite:///{out_root / name / 'study.db'}"
        have = _finished(name, storage)
        todo = min(opts["trials"] - have, budget_left)
        if todo > 0:
            print(f"seed {seed}: {have} trials stored, running {todo} more", flush=True)
            run_search(load_settings([*cfg_overrides, f"study.n_trials={todo}"]))
            budget_left -= todo
        studies.append((seed, name, storage, load_settings(cfg_overrides)))
    missing = sum(opts["trials"] - _finished(n, s) for _, n, s, _ in studies)
    if missing > 0:
        print(f"{missing} trials still to run; run the same command again to continue")
        return 0

    fractions = tuple(float(f) for f in str(opts["fractions"]).split(","))
    gain = float(opts["min_gain"])
    rule = EarlyStopping(
        fractions=fractions,
        margin=float(opts["margin"]),
        min_gain=gain if gain >= 0 else None,
        quantile=float(opts["quantile"]),
    )
    rows = {}
    for seed, name, storage, cfg in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        settings = cfg.proxy.training
        eval_cost = settings.eval_windows / (3 * settings.batch_size)  # forward only, 1/3 of a step
        reference = Reference.from_dict(records.reference(study) or {})
        trials = study.get_trials(deepcopy=False)[: opts["trials"]]
        rows[seed] = replay(trials, rule, settings.steps, eval_cost, reference)
    _print(rows, rule)
    out = Path(base.runs_dir) / "bench" / "early_stop.json"
    atomic_write(out, json.dumps({"rule": rule.__dict__, "seeds": rows}, indent=2, default=list))
    print(f"\nwrote {out}")
    return 0


def _finished(name: str, storage: str) -> int:
    if not Path(storage.removeprefix("sqlite:///")).exists():
        return 0
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _print(rows: dict[int, dict[str, Any]], rule: EarlyStopping) -> None:
    print(
        f"\nrule: checkpoints at {rule.fractions} of the steps, margin {rule.margin} bpb, "
        f"min hypervolume gain {rule.min_gain}"
    )
    print(
        f"{'seed':>4} {'trained':>8} {'stopped':>8} {'compute saved':>14} {'HV all':>8} "
        f"{'HV kept':>8} {'HV lost':>8}"
    )
    for seed, r in rows.items():
        print(
            f"{seed:>4} {r['trained']:>8} {len(r['stopped']):>8} {r['compute_saved']:>14.1%} "
            f"{r['hv_all']:>8.4f} {r['hv_kept']:>8.4f} {r['hv_lost']:>8.2%}"
        )
    saved = statistics.median(r["compute_saved"] for r in rows.values())
    lost = statistics.median(r["hv_lost"] for r in rows.values())
    print(f"{'median':>4} {'':>8} {'':>8} {saved:>14.1%} {'':>8} {'':>8} {lost:>8.2%}")
