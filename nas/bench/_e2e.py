"""The fidelity bench's end-to-end part: the front a whole search returns, re-scored by longer
training (`python -m nas.bench fidelity part=e2e`).

Three searches of the budget's default space, one after the other, each its own study:
- `multi-fidelity`: the default (rungs, promotion, paired seeds at the top rung), `e2e_trials`
  trials; its wall time becomes everyone's budget (or `e2e_seconds`);
- `single-fidelity`: today's search before rungs (one 1x run per candidate, one seed, cosine);
- `random`: random sampling, single-fidelity;
- `random, multi-fidelity`: random sampling with the default's rungs (what the cost-aware
  sampler, which learns from rung-0 values, adds under the same rungs).
Then every candidate any of them trained is trained again at `e2e_factor` (8) x the rung-0 steps
with 2 seeds on the standard recipe and compressed as it was searched (cached per candidate and
shared between the searches; the emitted fronts first, then the rest layer by layer, so `limit=`
chunks grade the searches early). Reported per search: the emitted front's true hypervolume (its
members re-scored so, under the study's own reference point) and its front capture (that
hypervolume over the best front among all the search's candidates under the same scoring).
Each graded run leaves `report.json` in its seed's folder, and the report ends with every kind's
true hypervolume over the search seeds graded so far under the same reference point (the latency
priors move it), paired with the default's seed by seed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nas import records
from nas.arch import ArchConfig, CompressionConfig
from nas.bench._runs import RunSpec
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.fidelity.promotion import layers
from nas.files import atomic_write
from nas.objectives.hypervolume import Reference, hypervolume
from nas.objectives.pareto import IncrementalFront, front_members
from nas.search.run import run_search

KINDS = {
    "multi-fidelity": [],
    "single-fidelity": ["budget.rungs=1", "budget.seeds=1", "proxy.schedule=cosine"],
    "random": ["sampler=random", "budget.rungs=1", "budget.seeds=1", "proxy.schedule=cosine"],
    "random, multi-fidelity": ["sampler=random"],  # what the sampler adds under the same rungs
}
FACTOR = 8
SEEDS = 2


def _search(kind: str, root: Path, overrides: list[str], trials: int, seconds: float) -> Any:
    """Run (once) the `kind` search; its study and wall seconds (kept in a marker file)."""
    slug = kind.replace(", ", "-")
    marker = root / f"{slug}.done.json"
    # The truth retrains each returned shape from scratch; a shrink candidate's truth would train
    # its larger shape and prune it, which RunSpec cannot yet: these searches train as sampled.
    args = ["search_space.structured=[false]", *overrides, *KINDS[kind], f"runs_dir={root}",
            f"study.name=e2e-{slug}", "quiet=true", f"study.n_trials={trials}",
            f"study.timeout_s={seconds}"]  # fmt: skip
    settings = load_settings(args)
    if not marker.is_file():
        started = time.perf_counter()
        run_search(settings)
        done = {"wall_s": time.perf_counter() - started, "args": args}
        atomic_write(marker, json.dumps(done))
    study = optuna.load_study(study_name=settings.study.name, storage=settings.study.storage)
    return study, json.loads(marker.read_text())["wall_s"]


def _key(record: records.TrialRecord) -> str:
    arch = ArchConfig.from_dict(record.arch)
    return json.dumps([arch.to_dict(), CompressionConfig(**record.compression).to_dict()],
                      sort_keys=True)  # fmt: skip


def _candidates(study: optuna.Study) -> dict[str, tuple[ArchConfig, CompressionConfig]]:
    out = {}
    for t in study.get_trials(deepcopy=False):
        if records.learns(t):
            r = records.read(t)
            out[_key(r)] = (ArchConfig.from_dict(r.arch), CompressionConfig(**r.compression))
    return out


def _priority(study: optuna.Study) -> dict[str, int]:
    """Each candidate's place in the order the truth is trained: 0 for the emitted front, then
    1 + its non-dominated layer among the study's candidates (on their rung-0 values, the one
    value every candidate has). The true hypervolumes need the emitted fronts only; the best
    attainable front is almost always drawn from the first layers, so a run cut short still
    grades the searches and bounds their capture."""
    trials = [t for t in study.get_trials(deepcopy=False) if records.learns(t)]
    order = {_key(records.read(t)): 0 for t in front_members(trials, records.target(study))}
    points = np.array([t.values for t in trials], dtype=float).reshape(len(trials), -1)
    for place, rows in enumerate(layers(points), start=1):
        for i in rows:
            order.setdefault(_key(records.read(trials[i])), place)
    return order


def e2e_kinds(opts: dict[str, Any]) -> list[str]:
    """The searches `e2e_kinds=` names (slugs, comma-separated), checked before anything runs."""
    slugs = {k.replace(", ", "-"): k for k in KINDS}
    asked = [x.strip() for x in str(opts["e2e_kinds"]).split(",") if x.strip()]
    unknown = [x for x in asked if x not in slugs]
    if unknown or "multi-fidelity" not in asked:
        raise NasError(
            f"e2e_kinds={opts['e2e_kinds']}: name multi-fidelity (its wall time is everyone's) and "
            f"any of {', '.join(slugs)}"
        )
    return [k for slug, k in slugs.items() if slug in asked]


def e2e_part(bench: Any, opts: dict[str, Any], overrides: list[str]) -> dict[str, Any] | None:
    # `e2e_seed` repeats the searches (sampler and proxy seeds) in a folder of their own, for the
    # spread between searches; the truth, seeded apart from them, stays shared.
    seed = int(opts["e2e_seed"])
    root = Path(bench.cfg.runs_dir) / "bench" / ("fidelity-e2e" + (f"-seed{seed}" if seed else ""))
    overrides = [*overrides, f"seed={seed}"] if seed else overrides
    kinds = e2e_kinds(opts)
    studies = {}
    first, wall = _search("multi-fidelity", root, overrides, opts["e2e_trials"], 1e6)
    studies["multi-fidelity"] = (first, wall)
    budget = float(opts["e2e_seconds"] or wall)
    for kind in kinds[1:]:
        studies[kind] = _search(kind, root, overrides, 100000, budget)
    settings = bench.truth_settings(FACTOR)
    candidates: dict[str, tuple[ArchConfig, CompressionConfig]] = {}
    priority: dict[str, int] = {}
    for study, _ in studies.values():
        candidates.update(_candidates(study))
        for key, place in _priority(study).items():
            priority[key] = min(place, priority.get(key, place))
    specs = {
        (key, s): RunSpec(arch, settings, (), s, bench.tag, compression=comp)
        for key, (arch, comp) in sorted(candidates.items(), key=lambda kv: priority[kv[0]])
        for s in range(SEEDS)
    }
    done = bench.run(list(specs.values()))
    per_seed = {
        key: [done[specs[(key, s)].key()]["bpb_compressed"] for s in range(SEEDS)]
        for key in candidates
        if all(specs[(key, s)].key() in done for s in range(SEEDS))
    }
    truth = {key: float(np.mean(values)) for key, values in per_seed.items()}
    print(
        f"e2e: {len(truth)} of {len(candidates)} candidates re-scored at {FACTOR}x with {SEEDS} "
        f"seeds ({sum(1 for p in priority.values() if p == 0)} on the emitted fronts)"
    )
    report = {k: _scored(study, wall, truth) for k, (study, wall) in studies.items()}
    if any(row is None for row in report.values()):
        return None
    for kind, (study, wall) in studies.items():  # the spread: each truth seed on its own
        seeds = [{k: v[s] for k, v in per_seed.items()} for s in range(SEEDS)]
        report[kind]["true_hv_seeds"] = [_scored(study, wall, one)["true_hv"] for one in seeds]
    for kind, row in report.items():
        bound = (
            "" if row["complete"] else f" (upper bound: {row['scored']} of {row['learned']} scored)"
        )
        print(
            f"e2e {kind:<22} {row['wall_s']:>6.0f} s, {row['trained_tokens'] / 1e6:>6.1f}M tokens, "
            f"{row['trials']:>4} trials, front "
            f"{row['front']:>3}: true hypervolume {row['true_hv']:.4f} (seeds "
            f"{' / '.join(f'{hv:.4f}' for hv in row['true_hv_seeds'])}), best true bpb "
            f"{row['best_bpb']:.3f}, capture "
            f"{row['capture']:.1%}{bound} (best attainable {row['best_hv']:.4f})"
        )
    atomic_write(root / "report.json", json.dumps({"seed": seed, "studies": report}))
    pooled, left_out = same_reference(_reports(root.parent), report["multi-fidelity"]["reference"])
    if left_out:
        print(f"e2e across searches: search seed(s) {left_out} left out, graded under another "
              "reference point (other latency priors or space): their hypervolumes measure other "
              "objectives")  # fmt: skip
    spread = across_searches(pooled)
    for kind, row in spread.items():
        paired = row.get("minus_default")
        versus = (
            ""
            if paired is None
            else f"; minus the default's, paired by search seed: {paired['mean']:+.4f} "
            f"+- {paired['sd']:.4f}, above it in {paired['above']} of {paired['n']}"
        )
        print(
            f"e2e across searches {kind:<22} true hypervolume {row['mean']:.4f} +- "
            f"{row['sd']:.4f} over {row['n']} search seed(s) {row['search_seeds']}{versus}"
        )
    return {"factor": FACTOR, "seeds": SEEDS, "candidates": len(candidates),
            "scored": len(truth), "studies": report, "across_searches": spread}  # fmt: skip


def _reports(bench_dir: Path) -> dict[int, dict[str, Any]]:
    """Every graded e2e run under `bench_dir`, by search seed: each seed's folder keeps its own."""
    out = {}
    for path in sorted(bench_dir.glob("fidelity-e2e*/report.json")):
        data = json.loads(path.read_text())
        out[int(data["seed"])] = data["studies"]
    return out


def same_reference(
    reports: dict[int, dict[str, Any]], reference: dict[str, float]
) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """The reports graded under `reference`, and the search seeds of the others. The reference
    point follows the latency priors and the space, so a report made before they changed (or one
    that does not say) scores other objectives and must not be pooled with this one."""
    same = {s: r for s, r in reports.items() if r["multi-fidelity"].get("reference") == reference}
    return same, sorted(set(reports) - set(same))


def across_searches(reports: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each kind's true hypervolume over repeated searches (mean, sample sd), and its difference
    from the default's paired by search seed: one search per kind cannot tell a kind's gap from
    the luck of one search, which is what this spread measures."""

    def spread(values: list[float]) -> dict[str, Any]:
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return {"n": len(values), "mean": float(np.mean(values)), "sd": sd}

    default = {
        s: r["multi-fidelity"]["true_hv"] for s, r in reports.items() if "multi-fidelity" in r
    }
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        by_seed = {s: r[kind]["true_hv"] for s, r in sorted(reports.items()) if kind in r}
        if not by_seed:
            continue
        out[kind] = {**spread(list(by_seed.values())), "search_seeds": list(by_seed)}
        paired = [v - default[s] for s, v in by_seed.items() if s in default]
        if kind != "multi-fidelity" and paired:
            above = sum(1 for d in paired if d > 0)
            out[kind]["minus_default"] = {**spread(paired), "above": above}
    return out


def _scored(study: optuna.Study, wall: float, truth: dict[str, float]) -> dict[str, Any] | None:
    """The emitted front's true hypervolume and its share of the best attainable among the
    candidates scored so far (an upper bound on the capture until every one is); None until the
    emitted front is scored."""
    reference = Reference.from_dict(records.reference(study) or {})
    trials = study.get_trials(deepcopy=False)

    def point(t: optuna.trial.FrozenTrial) -> tuple[float, float, float] | None:
        quality = truth.get(_key(records.read(t)))
        return None if quality is None else (quality, float(t.values[1]), float(t.values[2]))

    emitted = [point(t) for t in front_members(trials, records.target(study))]
    if any(p is None for p in emitted):
        return None
    every = IncrementalFront()
    learned = [t for t in trials if records.learns(t)]
    scored = [(p, t.number) for t in learned if (p := point(t)) is not None]
    for p, number in scored:
        every.add(p, number)
    best = hypervolume(every.points, reference) if every.items else 0.0
    true_hv = hypervolume(emitted, reference)
    tokens = sum(records.read(t).train_tokens or 0 for t in trials)
    return {
        "reference": reference.to_dict(),  # what the hypervolumes are measured against
        "wall_s": wall,
        "trained_tokens": tokens,  # the compute each search spent, whatever the machine's load
        "trials": len(trials),
        "learned": len(learned),
        "scored": len(scored),
        "complete": len(scored) == len(learned),
        "front": len(emitted),
        "true_hv": true_hv,
        "best_bpb": min(p[0] for p in emitted),  # the front's best quality, re-scored
        "best_hv": best,
        "capture": true_hv / best if best else 0.0,
    }
