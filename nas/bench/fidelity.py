"""Grade the quality numbers against real longer, multi-seed training (resumable, cached).

    python -m nas.bench fidelity [budget=cpu] [part=fidelity|target|e2e|all] [limit=N] [workers=2]

`part=fidelity` (default): >= 20 architectures of the budget's space, stratified over depth 1-4,
dense and MoE, tied and untied. The ground truth trains each `truth_factor` (16) x the rung-0
steps with `truth_seeds` (3) seeds, on the standard recipe (cosine schedule, one learning rate,
standard initialisation), independent of the proxy's own schedule. Every score is graded against
the truth's seed mean (Kendall tau, top-5 overlap, regret of the pick) next to the truth's own
noise ceiling: each rung (one seed, and the paired seeds' mean at the top rung), the learning-
curve extrapolation to the truth's length, the training-free `params` proxy, total parameters,
and rung 0 under each parameterisation (`variants`). The pick under a binding latency limit is
graded too, and what carrying on through the rungs saves against retraining.

`part=target`: `target_archs` (12) of them trained `target_factor` (64) x rung 0 with
`target_seeds` (2) seeds, against the extrapolation from the rungs up to the top one; and whether
the front's depth mix is the truth's; `target_from=12` takes the other twelve, which the
late-slope prior (`nas/fidelity/late_slope.yaml`) was first fitted without. `part=e2e`: the
front a whole search returns, re-scored by longer training (`nas/bench/_e2e.py`);
`e2e_seed=N` repeats its searches with other seeds, for the spread between searches, and
`e2e_kinds=` picks which of them run (multi-fidelity always).
Writes `<runs_dir>/bench/fidelity.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import ArchConfig
from nas.bench import split_options
from nas.bench._e2e import e2e_kinds
from nas.bench._grading import grade, noise_ceiling
from nas.bench._runs import RunSpec, describe, run_all
from nas.config.compose import load_settings
from nas.config.schema import Settings
from nas.errors import NasError
from nas.fidelity import late_slope
from nas.fidelity.noise import interaction_sd
from nas.fidelity.rungs import Rungs
from nas.fidelity.target import extrapolate
from nas.files import atomic_write
from nas.objectives.cheap import CheapObjectives
from nas.quality.data import prepare_data
from predictors.factory import latency_predictor, memory_predictor

DEFAULTS: dict[str, Any] = {
    "part": "fidelity",
    "archs": 24,
    "truth_factor": 16,
    "truth_seeds": 3,
    "ladder_seeds": 2,
    "target_factor": 64,
    "target_archs": 12,
    "target_from": 0,  # 12: the other twelve; 24 (with archs=36): the third set
    "target_seeds": 2,
    "variants": "depth,width_lr",
    "workers": 2,
    "limit": -1,
    "e2e_trials": 40,
    "e2e_seconds": 0,  # 0: the default search's own wall time sets everyone's
    "e2e_seed": 0,  # another value repeats the searches with other seeds (their own folder)
    "e2e_kinds": "multi-fidelity,single-fidelity,random,random-multi-fidelity",
}


def _arch(layers: int, heads: int, head_dim: int, ratio: float, vocab: int, **kw: Any):
    d_model = heads * head_dim
    ffn = max(8, round(ratio * d_model / 8) * 8)  # as search_spaces.slm rounds it
    kw.setdefault("n_kv_heads", heads)
    return ArchConfig(layers, heads, kw.pop("n_kv_heads"), head_dim, ffn, vocab, **kw)


def architectures(vocab: int) -> list[ArchConfig]:
    """24 shapes within the cpu budget's caps, six per depth 1-4: dense and MoE, tied and
    untied, narrow to the widest; the first three of each depth are the target check's."""
    archs = []
    for layers in (1, 2, 3, 4):
        every = 2 if layers > 1 else 1
        archs += [
            _arch(layers, 4, 16, 4.0, vocab),
            _arch(layers, 4, 32, 2.67, vocab, n_kv_heads=2, tie_embeddings=False),
            _arch(layers, 2, 32, 2.0, vocab, n_experts=4, experts_per_token=1),
            _arch(layers, 8, 32, 2.0, vocab, n_kv_heads=2),
            _arch(
                layers,
                4,
                32,
                1.5,
                vocab,
                n_kv_heads=2,
                n_experts=4,
                experts_per_token=2,
                tie_embeddings=False,
            ),
            _arch(
                layers,
                6,
                16,
                3.0,
                vocab,
                n_kv_heads=2,
                n_experts=2,
                experts_per_token=1,
                moe_every=every,
            ),
        ]
    return archs + third_set(vocab)


def third_set(vocab: int) -> list[ArchConfig]:
    """12 more shapes (`archs=36`), three per depth, at widths and mixes the first 24 do not
    have: a third set for the late-slope prior, whose form was chosen on the first 24."""
    return [
        arch
        for make in (
            lambda n: _arch(n, 6, 16, 3.0, vocab, n_kv_heads=3),
            lambda n: _arch(n, 6, 32, 2.0, vocab, n_kv_heads=2, tie_embeddings=False),
            lambda n: _arch(n, 4, 32, 2.0, vocab, n_experts=4, experts_per_token=1),
        )
        for arch in (make(n) for n in (1, 2, 3, 4))
    ]


def target_subset(archs: list[ArchConfig], count: int, start: int = 0) -> list[int]:
    """Indices of the target check's architectures, `count` of them from the `start`-th: the
    first 24's six per depth taken round robin (0: the first three of each depth, 12: the other
    three), then the third set (24)."""
    first_24 = min(24, len(archs))
    per_depth = [list(range(first, min(first + 6, first_24))) for first in range(0, first_24, 6)]
    order = [i for slot in range(6) for group in per_depth for i in group[slot : slot + 1]]
    order += list(range(first_24, len(archs)))
    return sorted(order[start : start + count])


class Bench:
    """The cached runs of one budget: truth, ladders, variants, long targets."""

    def __init__(self, cfg: Settings, opts: dict[str, Any]) -> None:
        self.cfg, self.opts = cfg, opts
        self.data, tokenizer, self.info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
        self.tag = hashlib.sha256(
            f"{self.info['corpus_fingerprint']}{tokenizer.to_str()}".encode()
        ).hexdigest()[:16]
        self.short = cfg.proxy.training
        self.rungs = Rungs(self.short.steps, cfg.budget.eta, cfg.budget.rungs, cfg.budget.seeds,
                           self.short.decay_fraction)  # fmt: skip
        self.archs = architectures(self.info["vocab_size"])[: opts["archs"]]
        self.cache = Path(cfg.cache_dir) / "bench-fidelity"
        self.missing = 0

    def truth_settings(self, factor: int) -> Any:
        return dataclasses.replace(
            self.short, steps=self.short.steps * factor, schedule="cosine",
            parameterisation="standard",
        )  # fmt: skip

    def run(self, specs: list[RunSpec]) -> dict[str, dict[str, Any]]:
        limit = None if self.opts["limit"] < 0 else self.opts["limit"]
        records, missing = run_all(
            specs, self.data, self.cache, workers=self.opts["workers"], limit=limit
        )
        self.missing += missing
        return records

    def truth(self, archs: list[ArchConfig], factor: int, seeds: int) -> list[list[float]]:
        """truth[s][i]: bits per byte of seed s of architecture i (nan while not run)."""
        settings = self.truth_settings(factor)
        specs = [RunSpec(a, settings, (), s, self.tag) for s in range(seeds) for a in archs]
        done = self.run(specs)
        return _table(specs, done, seeds, len(archs), lambda r: r["bpb"])

    def ladders(
        self, parameterisation: str, seeds: int, rungs: int, archs: list[ArchConfig] | None = None
    ) -> list[list[list[float]]]:
        """ladders[s][i][k]: rung k of architecture i (of `archs`, default all) with seed s."""
        archs = self.archs if archs is None else archs
        settings = dataclasses.replace(self.short, parameterisation=parameterisation)
        totals = tuple(self.rungs.total(k) for k in range(rungs))
        specs = [
            RunSpec(a, settings, (), s, self.tag, rungs=totals) for s in range(seeds) for a in archs
        ]
        done = self.run(specs)
        return _table(specs, done, seeds, len(archs), lambda r: [b for _, b, _ in r["rungs"]])


def _table(specs: list[RunSpec], done: dict[str, Any], rows: int, cols: int, value: Any) -> Any:
    flat = [value(done[s.key()]) if s.key() in done else None for s in specs]
    return [flat[r * cols : (r + 1) * cols] for r in range(rows)]


def _complete(*tables: Any) -> bool:
    return all(v is not None for table in tables for row in table for v in row)


def fidelity_part(bench: Bench) -> dict[str, Any] | None:
    """The fidelity table (see the module doc); None while runs are missing."""
    opts, archs = bench.opts, bench.archs
    truth_seeds = bench.truth(archs, opts["truth_factor"], opts["truth_seeds"])
    ladders = bench.ladders("standard", opts["ladder_seeds"], bench.rungs.count)
    variants = {
        name: bench.ladders(name, opts["ladder_seeds"], min(2, bench.rungs.count))
        for name in str(opts["variants"]).split(",")
        if name
    }
    if not _complete(truth_seeds, ladders, *variants.values()):
        return None
    truth = np.mean(truth_seeds, axis=0)
    scores = _scores(bench, ladders, variants, truth_seeds)
    rows = {name: grade(values, list(truth)) for name, values in scores.items()}
    return {
        "architectures": [describe(a) for a in archs],
        "truth": {
            "steps": bench.truth_settings(opts["truth_factor"]).steps,
            "seeds": opts["truth_seeds"],
            "bpb_mean": list(truth),
            "seed_interaction_sd": interaction_sd(np.array(truth_seeds).T),
            **noise_ceiling(truth_seeds),
        },
        "rung_steps": [bench.rungs.total(k) for k in range(bench.rungs.count)],
        "grades": rows,
        "scores": {name: list(map(float, v)) for name, v in scores.items()},
        "binding_limit": _binding_pick(bench, scores, list(truth)),
        "carry_on": _carry_on(bench.rungs),
    }


def _scores(
    bench: Bench,
    ladders: list[list[list[float]]],
    variants: dict[str, list[list[list[float]]]],
    truth_seeds: list[list[float]],
) -> dict[str, list[float]]:
    """Every score an architecture gets, lower = predicted better."""
    lad = np.array(ladders, dtype=float)  # [seed, arch, rung]
    scores: dict[str, list[float]] = {}
    for k in range(lad.shape[2]):
        scores[f"rung {k} ({bench.rungs.total(k)} steps), seed 0"] = list(lad[0, :, k])
        scores[f"rung {k}, {lad.shape[0]} seeds"] = list(lad[:, :, k].mean(axis=0))
    tokens = bench.short.batch_size * bench.short.seq_len
    curves = [
        [(bench.rungs.total(k) * tokens, float(lad[0, i, k])) for k in range(lad.shape[2])]
        for i in range(lad.shape[1])
    ]
    at = bench.truth_settings(bench.opts["truth_factor"]).steps * tokens
    extrapolated, _, _ = extrapolate(curves, at)
    offset = lad[:, :, -1].mean(axis=0) - lad[0, :, -1]  # the paired seeds' mean, carried over
    scores["extrapolated to the truth's length"] = list(np.array(extrapolated) + offset)
    top = list(lad[:, :, -1].mean(axis=0))
    prior = late_slope_scores(bench, bench.archs, top, at / tokens)
    scores["late-slope prior to the truth's length"] = prior["values"]
    scores["params proxy (-log non-embedding)"] = [
        -float(np.log10(a.non_embedding_params)) for a in bench.archs
    ]
    scores["total parameters (-log)"] = [-float(np.log10(a.params)) for a in bench.archs]
    for name, table in variants.items():
        var = np.array(table, dtype=float)
        for k in range(var.shape[2]):
            scores[f"rung {k}, {var.shape[0]} seeds, parameterisation={name}"] = list(
                var[:, :, k].mean(axis=0)
            )
    scores["truth seed 0 (a single long run)"] = list(truth_seeds[0])
    return scores


def late_slope_scores(
    bench: Bench, archs: list[ArchConfig], top: list[float], steps: float
) -> dict[str, Any]:
    """Each architecture's top rung (seed mean) read on to `steps` by the late-slope prior; an
    architecture among the prior's own rows is read by the prior refitted without it."""
    fitted = {r.arch for r in late_slope.read_rows()}
    top_steps = bench.rungs.total(bench.rungs.top)
    values, held_out = [], 0
    for arch, bpb in zip(archs, top, strict=True):
        name = describe(arch)
        held_out += name not in fitted
        prior = late_slope.prior(leave_out=(name,))
        values.append(prior.at(bpb, arch.n_layers, arch.d_model, top_steps, steps))
    shipped = late_slope.prior()
    return {
        "values": values,
        "held_out": held_out,  # graded architectures the shipped prior was not fitted on
        "claimed_sd_bpb": shipped.sd(top_steps, steps),
        "coef": shipped.coef,
        "fitted_rows": shipped.rows,
    }


def _binding_pick(
    bench: Bench, scores: dict[str, list[float]], truth: list[float]
) -> dict[str, Any]:
    """The pick under a decode limit that binds (the median architecture's decode on the
    device), for each score: its truth minus the best truth under the same limit."""
    hardware = bench.cfg.hardware
    cheap = CheapObjectives(latency_predictor(hardware), memory_predictor(hardware))
    from nas.arch import Candidate

    decode = [cheap(Candidate(a)).decode.mean for a in bench.archs]
    limit = float(np.median(decode))
    allowed = [i for i, d in enumerate(decode) if d <= limit]
    best = min(truth[i] for i in allowed)
    picks = {
        name: float(truth[min(allowed, key=lambda i: values[i])] - best)
        for name, values in scores.items()
    }
    return {"decode_limit_ms": limit, "allowed": len(allowed), "regret_bpb": picks}


def _carry_on(rungs: Rungs) -> dict[str, Any]:
    """Steps to reach each rung by carrying on against retraining from scratch at each rung."""
    carry = [rungs.ladder_cost(k) for k in range(rungs.count)]
    retrain = [sum(rungs.total(j) for j in range(k + 1)) for k in range(rungs.count)]
    return {
        "carry_on_steps": carry,
        "retrain_steps": retrain,
        "saved_at_top": 1.0 - carry[-1] / retrain[-1],
    }


def main(argv: list[str]) -> int:
    from nas.bench._fidelity_report import run_parts

    opts, overrides = split_options(argv, DEFAULTS, budget="cpu")
    e2e_kinds(opts)  # a misspelt search refuses before any data is prepared
    if not 0 <= opts["target_from"] <= opts["archs"] - opts["target_archs"]:
        most = opts["archs"] - opts["target_archs"]
        raise NasError(
            f"target_from={opts['target_from']} with target_archs={opts['target_archs']} "
            f"needs 0 <= target_from <= archs - target_archs = {most}"
        )
    cfg = load_settings(overrides)
    bench = Bench(cfg, opts)
    report = run_parts(bench, opts, overrides)
    out = Path(cfg.runs_dir) / "bench" / "fidelity.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    atomic_write(out, json.dumps({**previous, **report}, indent=2, default=float))
    if bench.missing:
        print(f"{bench.missing} runs still to do; run the same command again to continue")
    print(f"wrote {out}")
    return 0
