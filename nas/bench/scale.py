"""Trials per hour with 1 and 2 local workers, and the engine's own overhead per trial.

    python -m nas.bench scale [trials=150] [repeats=3] [fill=1000] [measure=50]
                              [storages=sqlite] [runs_dir=runs] [KEY=VALUE overrides ...]

Throughput: `trials` candidates are drawn once from the `budget=smoke` space and queued into
fresh studies (journal storage), so both worker counts train exactly the same models; the runs
alternate 1, 2, 1, 2, ... `repeats` times. Trials per hour are counted over the whole command
(worker start-up included) and over the trials' own span (first start to last finish).

Overhead: a study is filled with `fill` real trials of the training-free `proxy=params` (real
sampler, predictors, constraints, storage, progress and Pareto bookkeeping; no training), then
`measure` more trials are timed: with no training, each trial's time *is* the engine's overhead.
Writes `<runs_dir>/bench/scale.json`.
"""

from __future__ import annotations

import itertools
import json
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import optuna

from nas.bench import split_options
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.files import atomic_write
from nas.records import OBJECTIVES
from nas.search.run import build_space, run_search
from nas.search.workers import available_cores
from nas.study.storage import open_storage

BENCH_KEYS = {
    "trials": 150,
    "repeats": 3,
    "fill": 1000,
    "measure": 50,
    "storages": "sqlite",
    "samplers": "cost_aware,tpe,random",
    "workers": "1,2",
}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _candidates(base: list[str], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` distinct candidates of the smoke space, as Optuna parameters."""
    cfg = load_settings(base)
    space = build_space(cfg, cfg.proxy.vocab_size)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    seen: list[dict[str, Any]] = []
    for _ in range(count * 50):
        trial = draw.ask()
        space.suggest(trial)
        draw.tell(trial, state=optuna.trial.TrialState.FAIL)
        if trial.params not in seen:
            seen.append(trial.params)
        if len(seen) == count:
            return seen
    raise NasError(f"the smoke space has fewer than {count} distinct candidates")


def throughput(base: list[str], root: Path, opts: dict[str, Any]) -> dict[str, Any]:
    params = _candidates(base, opts["trials"])
    counts = [int(w) for w in str(opts["workers"]).split(",")]
    # Warm-up, paid once per command by either worker count: the caches (tokenizer, token
    # streams), this process's first models (transformers loads its model code lazily) and the
    # worker pool's forkserver with its imports.
    warm = f"journal:///{root / 'warm' / 'study.journal'}"
    warm_up = ["study.name=warm", f"study.storage={warm}"]
    run_search(load_settings([*base, *warm_up, "study.n_trials=4"]))
    run_search(load_settings([*base, *warm_up, "study.n_trials=0", "study.workers=2"]))
    runs: dict[int, list[dict[str, float]]] = {w: [] for w in counts}
    for repeat in range(opts["repeats"]):
        for workers in counts:
            name = f"tput-w{workers}-r{repeat}"
            url = f"journal:///{root / name / 'study.journal'}"
            study = optuna.create_study(
                study_name=name, storage=open_storage(url), directions=["minimize"] * 3
            )
            for p in params:
                study.enqueue_trial(p)
            cfg = load_settings(
                [*base, f"study.name={name}", f"study.storage={url}",
                 f"study.workers={workers}", f"study.n_trials={len(params)}"]
            )  # fmt: skip
            started = time.perf_counter()
            run_search(cfg)
            wall = time.perf_counter() - started
            done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) != len(params):
                raise NasError(f"{name}: {len(done)} of {len(params)} trials finished")
            span = (
                max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
            ).total_seconds()
            run = {
                "wall_s": wall,
                "span_s": span,
                "trials_per_hour_wall": 3600 * len(done) / wall,
                "trials_per_hour_span": 3600 * len(done) / span,
            }
            runs[workers].append(run)
            print(
                f"  {workers} worker(s), repeat {repeat}: {len(done)} trials, wall {wall:.1f} s "
                f"({run['trials_per_hour_wall']:.0f}/h), span {span:.1f} s "
                f"({run['trials_per_hour_span']:.0f}/h)",
                flush=True,
            )
    summary: dict[str, Any] = {"trials": len(params), "runs": runs}
    for workers in counts:
        summary[f"w{workers}"] = {
            key: _spread([r[key] for r in runs[workers]])
            for key in ("trials_per_hour_wall", "trials_per_hour_span", "wall_s", "span_s")
        }
    if 1 in counts and len(counts) > 1:
        top = max(counts)
        for key in ("trials_per_hour_wall", "trials_per_hour_span"):
            ratios = [
                b[key] / a[key] for a, b in zip(runs[1], runs[top], strict=True)
            ]  # paired by repeat
            summary[f"speedup_{key.removeprefix('trials_per_hour_')}"] = _spread(ratios)
    return summary


def _storage_url(kind: str, root: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{root / name / 'study.db'}"
    if kind == "journal":
        return f"journal:///{root / name / 'study.journal'}"
    if kind.startswith("postgresql://"):
        return kind
    raise NasError(f"storages: {kind!r} unknown; use sqlite, journal or a postgresql:// URL")


def _measure(args: list[str], url: str, name: str, sampler: str, count: int) -> dict[str, Any]:
    """Run `count` more trials; each one's finish-to-finish time is the engine's overhead."""
    before = len(optuna.load_study(study_name=name, storage=open_storage(url)).trials)
    started = time.perf_counter()
    run_search(load_settings([*args, f"sampler={sampler}", f"study.n_trials={count}"]))
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    new = sorted(trials[before:], key=lambda t: t.number)
    # Finish to finish: the sampler, the objective (predictors, attributes), the tell and the
    # callbacks of one trial; the first measured trial, which carries the start-up, is left out.
    gaps = [
        (b.datetime_complete - a.datetime_complete).total_seconds() * 1000
        for a, b in itertools.pairwise(new)
    ]
    return {
        "stored_before": before,
        "wall_s": wall,
        "ms_per_trial": _spread(gaps),
        "ms_per_trial_p90": statistics.quantiles(gaps, n=10)[-1],
    }


def overhead(base: list[str], root: Path, opts: dict[str, Any], kind: str) -> dict[str, Any]:
    name = f"overhead-{int(time.time())}"
    url = _storage_url(kind, root, name)
    args = [*base, "proxy=params", f"study.name={name}", f"study.storage={url}"]
    try:
        started = time.perf_counter()
        run_search(load_settings([*args, f"study.n_trials={opts['fill']}"]))
        fill_s = time.perf_counter() - started
        print(f"  {kind}: filled {opts['fill']} trials in {fill_s:.0f} s", flush=True)
        result: dict[str, Any] = {
            "storage": kind.split("@")[-1] if "://" in kind else kind,
            "stored_before": opts["fill"],
            "fill_s": fill_s,
            "fill_ms_per_trial": 1000 * fill_s / opts["fill"],
        }
        for sampler in str(opts["samplers"]).split(","):
            result[sampler] = _measure(args, url, name, sampler, opts["measure"])
            gaps, stored = result[sampler]["ms_per_trial"], result[sampler]["stored_before"]
            print(
                f"  {kind}, sampler={sampler}: with {stored} trials stored, "
                f"{gaps['median']:.1f} ms per trial (median of {gaps['n']}; min {gaps['min']:.1f},"
                f" max {gaps['max']:.1f}, p90 {result[sampler]['ms_per_trial_p90']:.1f})",
                flush=True,
            )
        return result
    finally:
        if kind.startswith("postgresql://"):
            optuna.delete_study(study_name=name, storage=open_storage(url))


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, BENCH_KEYS)
    negative = [k for k, v in opts.items() if isinstance(v, int) and v < 0]
    if negative:
        raise NasError(f"{negative[0]} must be a whole number >= 0, got {opts[negative[0]]}")
    base_cfg = load_settings(["budget=smoke", *overrides])
    runs_dir = Path(base_cfg.runs_dir)
    root = runs_dir / "bench" / "scale"
    shutil.rmtree(root, ignore_errors=True)
    cache = base_cfg.cache_dir
    base = ["budget=smoke", "quiet=true", *overrides, f"runs_dir={root}", f"cache_dir={cache}"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    machine = f"{platform.node()}: {platform.processor() or platform.machine()}, " + (
        f"{available_cores()} cores"
    )
    print(f"scale bench on {machine}")
    report: dict[str, Any] = {"machine": machine, "options": opts, "objectives": OBJECTIVES}
    if opts["trials"] > 0:
        print(f"throughput: {opts['trials']} queued smoke candidates, {opts['repeats']} repeats")
        report["throughput"] = throughput(base, root, opts)
    if opts["fill"] > 0:
        print(f"engine overhead: {opts['fill']} stored trials, {opts['measure']} measured")
        report["overhead"] = [
            overhead(base, root, opts, kind) for kind in str(opts["storages"]).split(",")
        ]
    out = runs_dir / "bench" / "scale.json"
    atomic_write(out, json.dumps(report, indent=2, default=str))
    tput = report.get("throughput", {})
    for key in ("speedup_wall", "speedup_span"):
        if key in tput:
            s = tput[key]
            print(f"{key}: median {s['median']:.2f}x (min {s['min']:.2f}, max {s['max']:.2f})")
    print(f"wrote {out}")
    return 0
