"""Search strategies compared: hypervolume against trials, several seeds, on our own objectives.

    python -m nas.bench sampler [hardware=pixel8] [budget=cpu] [trials=100] [seeds=5]
                                [samplers=cost_aware,tpe,nsga2,gp,random] [cap=gp:40]
                                [noise=0.0] [runs_dir=runs]

Each trial samples a candidate from the real search space, prices it with the real cheap objectives
(exact parameters, memory and roofline latency of the hardware file, device limits as constraints)
and takes its quality from a model fitted to measured proxy runs (`nas.bench._quality`: the proxy
bench's short runs, so run `python -m nas.bench proxy` first), so that hundreds of trials cost
seconds, not hours. Hypervolume uses the study's own reference point
(`nas.objectives.hypervolume`). For each sampler the bench prints the median hypervolume after
10/25/50/100 trials and how many trials it needs to reach random search's 100-trial hypervolume
of the same seed. Writes `<runs_dir>/bench/sampler.json`.

`noise=SIGMA` adds a Gaussian error of SIGMA bpb to every candidate's quality (fixed per candidate
and seed), as real proxy runs scatter around any fitted model; without it the landscape is as
smooth as the ridge fit. A sampler variant is named by its group and settings, e.g.
`samplers=tpe/n_startup_trials=5/group=false,random`; `cap=gp:40` runs at most 40 trials of a
slow sampler.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nas import records
from nas.arch import ArchConfig, CompressionConfig
from nas.bench import split_options
from nas.bench._quality import QualityModel, fit_compression, fit_quality
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.files import atomic_write
from nas.objectives.cheap import CheapObjectives
from nas.objectives.hypervolume import Reference, hypervolume, space_reference
from nas.quality.data import prepare_data
from nas.records import OBJECTIVES
from nas.samplers.factory import SamplerContext, build_sampler
from nas.search.run import build_space
from predictors import MemoryModel, RooflineLatency

DEFAULTS = {
    "trials": 100,
    "seeds": 5,
    "samplers": "cost_aware,tpe,nsga2,gp,random",
    "cap": "gp:40",
    "noise": 0.0,  # bpb; e.g. the quality model's leave-one-out error, to mimic real runs
}
MARKS = (10, 25, 50, 100)


def measured_runs(cache: Path, settings: dict[str, Any]) -> tuple[list[ArchConfig], list[float]]:
    """Architectures and proxy bits per byte of every cached bench run with these settings."""
    archs, bpbs = [], []
    for path in sorted(cache.glob("*.json")):
        record = json.loads(path.read_text())
        if record["settings"] == settings:
            archs.append(ArchConfig.from_dict(record["arch"]))
            bpbs.append(record["bpb"])
    return archs, bpbs


def compression_effects(root: Path) -> tuple[list[CompressionConfig], list[float]]:
    """(compression, compressed minus trained bpb) of every trained trial in the studies under
    `root` (the early-stopping bench's real studies)."""
    configs, deltas = [], []
    for db in sorted(root.glob("*/study.db")):
        storage = f"sqlite:///{db}"
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                record = records.read(t)
                if record.trained and "bpb_uncompressed" in record.metrics:
                    configs.append(CompressionConfig(**record.compression))
                    deltas.append(record.metrics["bpb"] - record.metrics["bpb_uncompressed"])
    return configs, deltas


def sampler_config(name: str, overrides: list[str]) -> Any:
    """The config of `name`: a sampler group (`tpe`) or a variant of one with its own settings
    (`tpe/n_startup_trials=5/group=false`), so that settings are compared without a file each."""
    group, *settings = name.split("/")
    return load_settings(
        [*overrides, f"sampler={group}", *(f"sampler.{s}" for s in settings)]
    ).sampler


def run_one(
    sampler: optuna.samplers.BaseSampler,
    objective: Any,
    trials: int,
    reference: Reference,
) -> tuple[list[tuple[float, float, float] | None], float]:
    """Objective vectors of feasible trials (None for infeasible ones), and sampler seconds."""
    study = optuna.create_study(directions=["minimize"] * len(OBJECTIVES), sampler=sampler)
    records.store_reference(study, reference.to_dict())  # as nas.search does
    started = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    seconds = time.perf_counter() - started
    out = []
    for t in study.trials:
        feasible = all(v <= 0 for v in t.constraints.values())
        out.append(tuple(t.values) if feasible else None)
    return out, seconds


def history(points: list[tuple[float, float, float] | None], reference: Reference) -> list[float]:
    """Hypervolume of the first n trials, for every n."""
    seen: list[tuple[float, float, float]] = []
    values = []
    for p in points:
        if p is not None:
            seen.append(p)
        values.append(hypervolume(seen, reference) if seen else 0.0)
    return values


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def make_objective(
    space: Any,
    cheap: CheapObjectives,
    quality: QualityModel,
    uniform: float,
    noise: float = 0.0,
    seed: int = 0,
):
    deploy = cheap.latency.hardware.deploy

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        candidate = space.suggest(trial)
        metrics = cheap(candidate)
        violations = metrics.violations(deploy)
        # As the real trial: an infeasible candidate is never trained and scores "uniform".
        infeasible = any(v > 0 for v in violations.values())
        records.store_candidate(trial, candidate, constraints=violations)
        records.store_outcome(trial, records.Outcome(trained=not infeasible))
        bpb = uniform if infeasible else quality.predict(candidate.arch, candidate.compression)
        if noise and not infeasible:  # the same candidate draws the same error in one seed
            digest = hashlib.sha256(f"{seed}{candidate!r}".encode()).digest()
            bpb += noise * float(np.random.default_rng(list(digest[:8])).standard_normal())
        return bpb, metrics.decode.mean, metrics.memory.mean

    return objective


@dataclass(frozen=True)
class _Bench:
    """What every sampler run of the bench shares: the space, prices, quality and reference."""

    space: Any
    cheap: CheapObjectives
    deploy: Any
    quality: QualityModel
    uniform: float
    reference: Reference
    opts: dict[str, Any]

    def curve(
        self, name: str, node: dict[str, Any], seed: int, trials: int, store: Path, tag: str
    ) -> tuple[list[float], float]:
        """The hypervolume after each trial of one seeded run, and the sampler's seconds;
        cached per sampler, seed, trials and quality model: re-runs only add what is new."""
        variant = hashlib.sha256(str(node).encode()).hexdigest()[:8]
        label = name.replace("/", "+")  # a variant's settings, not folders
        path = store / f"{label}-{variant}-seed{seed}-n{trials}-{tag}.json"
        if not path.exists():
            objective = make_objective(
                self.space, self.cheap, self.quality, self.uniform, self.opts["noise"], seed
            )
            context = SamplerContext(self.space, self.cheap, self.deploy)
            sampler = build_sampler(node, seed, context=context)
            points, spent = run_one(sampler, objective, trials, self.reference)
            hv = history(points, self.reference)
            atomic_write(path, json.dumps({"hv": hv, "s": spent}))
        record = json.loads(path.read_text())
        return record["hv"], record["s"]


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, DEFAULTS, budget="cpu")
    cfg = load_settings(overrides)
    runs_dir = Path(cfg.runs_dir)
    cache = Path(cfg.cache_dir)
    settings = cfg.proxy.training
    archs, bpbs = measured_runs(cache / "bench-proxy", asdict(settings))
    if len(archs) < 6:
        raise NasError(
            f"{len(archs)} measured proxy runs for this budget in {cache / 'bench-proxy'}; "
            "run `python -m nas.bench proxy` with the same budget first"
        )
    configs, deltas = compression_effects(runs_dir / "bench" / "early_stop")
    quality = fit_quality(archs, bpbs, fit_compression(configs, deltas) if configs else None)
    hardware = cfg.hardware
    cheap = CheapObjectives(RooflineLatency(hardware), MemoryModel(hardware))
    data, _, info = prepare_data(cfg.proxy, cache)
    space = build_space(cfg, info["vocab_size"])
    uniform = data.uniform_bpb(settings)  # as the search: untrained bpb, also the reference
    reference = space_reference(space, cheap, hardware.deploy, uniform)
    names = [n for n in str(opts["samplers"]).split(",") if n]
    print(
        f"reference point: bpb {reference.bpb:.4f}, decode {reference.decode_ms:.4g} ms, "
        f"memory {reference.memory_mb:.4g} MB (nas.objectives.hypervolume: the space's nadir)"
    )
    print(
        f"sampler bench on {hardware.name}, budget {cfg.budget.name}: {opts['trials']} trials x "
        f"{opts['seeds']} seeds; quality model fitted to {quality.n} proxy runs "
        f"(leave-one-out error {quality.loo_mae:.3f} bpb); compression effects from "
        f"{len(configs)} trained trials: "
        + (", ".join(f"{k} {v:+.3f}" for k, v in quality.compression.items()) or "none")
    )
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    caps = {k: int(v) for k, _, v in (c.partition(":") for c in str(opts["cap"]).split(",") if c)}
    tag = hashlib.sha256(
        json.dumps(
            [quality.coef.tolist(), quality.compression, reference.to_dict(), hardware.name]
            + ([opts["noise"]] if opts["noise"] else [])
        ).encode()
    ).hexdigest()[:12]
    bench = _Bench(space, cheap, hardware.deploy, quality, uniform, reference, opts)
    store = runs_dir / "bench" / "sampler-curves"
    curves: dict[str, list[list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for name in names:
        trials = min(opts["trials"], caps.get(name.split("/")[0], opts["trials"]))
        node = sampler_config(name, overrides)
        runs = [bench.curve(name, node, s, trials, store, tag) for s in range(opts["seeds"])]
        curves[name] = [hv for hv, _ in runs]
        seconds[name] = [spent / trials for _, spent in runs]
    summary = _summarise(curves, seconds, opts)
    out = runs_dir / "bench" / "sampler.json"
    atomic_write(
        out,
        json.dumps(
            {
                "summary": summary,
                "curves": curves,
                "quality_loo_mae": quality.loo_mae,
                "compression_effects": quality.compression,
            },
            indent=2,
        ),
    )
    print(f"\nwrote {out}")
    return 0


def _summarise(
    curves: dict[str, list[list[float]]], seconds: dict[str, list[float]], opts: dict[str, Any]
) -> dict[str, Any]:
    marks = [m for m in MARKS if m <= opts["trials"]]
    random_final = [c[-1] for c in curves.get("random", [])]
    header = "".join(f"{'HV@' + str(m):>9}" for m in marks)
    print(
        f"\n{'sampler':<10}{header} {'trials to random@' + str(opts['trials']):>22} {'s/trial':>8}"
    )
    summary = {}
    for name, runs in curves.items():
        medians = {
            m: statistics.median(c[m - 1] for c in runs) if len(runs[0]) >= m else math.nan
            for m in marks
        }
        reach = [trials_to_reach(c, t) for c, t in zip(runs, random_final, strict=False)]
        ran = len(runs[0])
        need = [r if r is not None else ran + 1 for r in reach]
        median_need = statistics.median(need) if need else None
        per_trial = statistics.median(seconds[name])
        shown = (
            "-"
            if median_need is None
            else (f"{median_need:g}" if median_need <= ran else f">{ran}")
        )
        print(
            f"{name:<10}"
            + "".join(
                f"{medians[m]:>9.4f}" if medians[m] == medians[m] else f"{'-':>9}" for m in marks
            )
            + f" {shown + ' ' + str(reach):>22} {per_trial:>8.3f}"
        )
        summary[name] = {
            "median_hv": {m: None if math.isnan(v) else v for m, v in medians.items()},
            "trials_to_random": reach,
            "median_trials_to_random": median_need,
            "seconds_per_trial": per_trial,
        }
    return summary
