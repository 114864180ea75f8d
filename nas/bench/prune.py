"""Grade the prune space's distillation proxy, and pruning against training from scratch.

    python -m nas.bench prune [parent=DIR] [children=16] [steps=N] [truth_factor=8]
                              [truth_seeds=2] [workers=2] [limit=N] [budget=cpu] [runs_dir=...]

The parent: `parent=DIR` (any checkpoint `search_space=prune` accepts), else the bench's own
parent, a Llama-style model (`parent_kind=moe`: Qwen3-MoE) of `parent_layers` x `parent_d_model`
trained from scratch for `parent_steps` steps with the proxy's own training on the budget's corpus
and tokenizer, saved with `save_pretrained` and cached under
`<runs_dir>/bench/prune-parent-<hash>/`, so it is trained once.

Fidelity: `children` shapes of the prune space of that parent (its whole grid ordered by active
parameters, taken at even steps, so every size and mix of axes shows up) are scored as a prune
study scores them: each child pruned by activation importance, distilled from the parent
(distill_lr, wsd) and measured at rung 0 (and each further rung up to `ladder_rungs`), one seed.
The truth distils each child `truth_factor` x longer (cosine) with `truth_seeds` seeds. Every
score is graded against the truth's seed mean (Kendall tau, top-5 overlap, regret of the pick,
`nas.bench._grading`) next to the truth's noise ceiling (tau between its seeds).

Prune vs scratch: for `compare` of the children (spread over sizes), the truth's distilled child
against the same shape trained from scratch (no teacher, the budget's lr, cosine) with the same
FLOPs: a distillation step costs the child's forward and backward plus the parent's forward, so
scratch gets proportionally more steps. Runs are cached and resumable as in `nas.bench.fidelity`
(`limit=` bounds the new runs of one invocation). Writes `<runs_dir>/bench/prune.json`.

Cost at the defaults (budget=cpu, one thread per run, step costs measured on the 6M-parameter
parent): the parent 6000 x 0.40 s (~40 min), then ~18,700 CPU-seconds of child runs (distillation
0.84 s a step, from scratch 0.31), ~2.6 h with workers=2: about 3.3 h on 2 idle cores in all.
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
from nas.bench._grading import grade, noise_ceiling
from nas.bench._prune_children import child_grid, prune_space, spread
from nas.bench._prune_runs import ChildRun, run_children, scratch_steps, train_parent
from nas.bench._runs import describe
from nas.config.compose import load_settings
from nas.config.schema import Settings
from nas.errors import NasError
from nas.fidelity.rungs import Rungs
from nas.files import atomic_write
from nas.quality.data import prepare_data

DEFAULTS: dict[str, Any] = {
    "parent": "",
    "parent_kind": "dense",
    "parent_layers": 8,
    "parent_d_model": 256,
    "parent_steps": 6000,
    "children": 16,
    "steps": 0,  # 0: the budget's proxy steps
    "truth_factor": 8,
    "truth_seeds": 2,
    "ladder_rungs": 2,
    "compare": 4,
    "scratch_seeds": 1,
    "workers": 2,
    "limit": -1,
}
HEAD_DIM = 32  # the bench parent's heads; kv groups of two query heads


def parent_shape(opts: dict[str, Any], vocab: int) -> ArchConfig:
    """The bench parent's shape: `parent_layers` x `parent_d_model`, heads of 32, GQA groups
    of 2; dense SwiGLU of 2.5 x d, or 4 experts (top 2) of d channels each."""
    d_model, kind = opts["parent_d_model"], opts["parent_kind"]
    heads = d_model // HEAD_DIM
    common = dict(n_layers=opts["parent_layers"], n_heads=heads, n_kv_heads=heads // 2,
                  head_dim=HEAD_DIM, vocab_size=vocab)  # fmt: skip
    if kind == "moe":
        return ArchConfig(**common, ffn_dim=d_model, n_experts=4, experts_per_token=2)
    return ArchConfig(**common, ffn_dim=round(2.5 * d_model / 8) * 8)


def check_options(opts: dict[str, Any]) -> None:
    """Refuse options that cannot work before anything is read or written."""
    if opts["parent_kind"] not in ("dense", "moe"):
        raise NasError(f"parent_kind={opts['parent_kind']} is not one of dense, moe")
    if opts["parent_d_model"] % (2 * HEAD_DIM) or opts["parent_layers"] < 1:
        raise NasError(
            f"parent_d_model={opts['parent_d_model']} must be a multiple of {2 * HEAD_DIM} and "
            "parent_layers at least 1"
        )
    small = [k for k in ("children", "truth_factor", "truth_seeds", "ladder_rungs", "compare",
                         "scratch_seeds", "workers", "parent_steps") if opts[k] < 1]  # fmt: skip
    if small:
        raise NasError(f"{', '.join(small)} must be at least 1")


def bench_parent(cfg: Settings, opts: dict[str, Any]) -> Path:
    """The bench parent's directory, trained now unless it is cached."""
    cache = Path(cfg.cache_dir)
    data, tokenizer, info = prepare_data(cfg.proxy, cache)
    arch = parent_shape(opts, info["vocab_size"])
    settings = dataclasses.replace(
        cfg.proxy.training, steps=opts["parent_steps"], schedule="cosine"
    )
    payload = [arch.to_dict(), dataclasses.asdict(settings), info["corpus_fingerprint"],
               tokenizer.to_str()]  # fmt: skip
    tag = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    directory = Path(cfg.runs_dir) / "bench" / f"prune-parent-{tag}"
    if (directory / "parent.json").is_file():
        print(f"bench parent {describe(arch)} ({arch.params / 1e6:.1f}M) from {directory}")
        return directory
    print(f"training the bench parent {describe(arch)} ({arch.params / 1e6:.1f}M parameters), "
          f"{settings.steps} steps, into {directory}", flush=True)  # fmt: skip
    directory.parent.mkdir(parents=True, exist_ok=True)
    trained = train_parent(arch, data, settings, tokenizer, directory)
    print(f"bench parent: {trained['bpb']:.4f} held-out bits per byte after "
          f"{trained['seconds']:.0f} s", flush=True)  # fmt: skip
    return directory


class PruneBench:
    """The parent, its pruning, the children and their cached runs."""

    def __init__(self, cfg: Settings, opts: dict[str, Any], overrides: list[str]) -> None:
        from nas.parent import load_parent
        from nas.quality.pruned import check_vocabulary, load_pruning, with_parent_tokenizer

        self.cfg, self.opts = cfg, opts
        directory = Path(opts["parent"]) if opts["parent"] else bench_parent(cfg, opts)
        self.parent = load_parent(directory)
        cache = Path(cfg.cache_dir)
        self.data, _, info = prepare_data(with_parent_tokenizer(cfg.proxy, self.parent), cache)
        check_vocabulary(self.parent, info["vocab_size"])
        training = dataclasses.replace(cfg.proxy.training, lr=cfg.proxy.distill_lr)
        if opts["steps"] > 0:
            training = dataclasses.replace(training, steps=opts["steps"])
        self.training = training  # a prune study's proxy run (nas.search.run.prepare)
        budget = cfg.budget
        self.rungs = Rungs(training.steps, budget.eta, budget.rungs, budget.seeds,
                           training.decay_fraction)  # fmt: skip
        self.pruning = load_pruning(
            self.parent, self.data, info, training, cache,
            temperature=cfg.proxy.distill_temperature, weight=cfg.proxy.distill_weight,
        )  # fmt: skip
        payload = [info["corpus_fingerprint"], info["vocab_size"], self.pruning.identity()]
        self.tag = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        space = prune_space(overrides, directory, info["vocab_size"])
        self.children = spread(child_grid(space), opts["children"])
        if len(self.children) < 2:
            raise NasError("the prune space of this parent holds fewer than 2 children to rank")
        self.compared = spread(list(range(len(self.children))), opts["compare"])
        self.cache = cache / "bench-prune"
        self.missing = 0

    def truth_settings(self) -> Any:
        steps = self.training.steps * self.opts["truth_factor"]
        return dataclasses.replace(self.training, steps=steps, schedule="cosine")

    def scratch_settings(self, arch: ArchConfig) -> Any:
        """The budget's own from-scratch run (its lr), with the truth's FLOPs."""
        steps = scratch_steps(arch, self.parent.arch, self.truth_settings().steps)
        return dataclasses.replace(self.cfg.proxy.training, steps=steps, schedule="cosine")

    def specs(self) -> dict[str, list[ChildRun]]:
        ladder = tuple(range(min(self.opts["ladder_rungs"], self.rungs.count)))
        truth = self.truth_settings()
        seeds = range(self.opts["truth_seeds"])
        scratch = [self.children[i] for i in self.compared]
        random = [ChildRun(a, truth, 0, f"{self.tag}-random0", "distill") for a in scratch]
        return {
            "random": random,  # units picked at random (seed 0), not by importance
            "ladder": [ChildRun(a, self.training, 0, self.tag, "ladder", ladder)
                       for a in self.children],
            "truth": [ChildRun(a, truth, s, self.tag, "distill") for s in seeds
                      for a in self.children],
            "scratch": [ChildRun(a, self.scratch_settings(a), s, self.tag, "scratch")
                        for s in range(self.opts["scratch_seeds"]) for a in scratch],
        }  # fmt: skip

    def run(self) -> dict[str, list[dict[str, Any] | None]]:
        groups = self.specs()
        limit = None if self.opts["limit"] < 0 else self.opts["limit"]
        every = [s for name, specs in groups.items() if name != "random" for s in specs]
        done, self.missing = run_children(
            every, self.pruning, self.data, self.rungs, self.cache,
            workers=self.opts["workers"], limit=limit,
        )  # fmt: skip
        random, missing = run_children(
            groups["random"], self.random_pruning(), self.data, self.rungs, self.cache,
            workers=self.opts["workers"], limit=limit,
        )  # fmt: skip
        self.missing += missing
        done.update(random)
        return {name: [done.get(s.key()) for s in specs] for name, specs in groups.items()}

    def random_pruning(self) -> Any:
        """The same parent and distillation, units kept at random (the importance baseline)."""
        return dataclasses.replace(self.pruning, importance=self.pruning.importance.random(0))


def pruned_bpb(bench: PruneBench, pruning: Any = None) -> list[float]:
    """Each child's held-out bits per byte as pruned, before any training."""
    from nas.quality.training import bits_per_byte

    pruning = pruning or bench.pruning
    return [bits_per_byte(pruning.child(a), bench.data, bench.training) for a in bench.children]


def versus_random(bench: PruneBench, runs: dict[str, list[Any]]) -> dict[str, Any]:
    """Activation importance against random units at equal size: every child as pruned, and
    the compared children after the truth's distillation (seed 0 of each)."""
    mine, rand = pruned_bpb(bench), pruned_bpb(bench, bench.random_pruning())
    rows = [
        {"child": describe(bench.children[i]), "pruned_bpb": mine[i],
         "random_pruned_bpb": rand[i], "distilled_bpb": runs["truth"][i]["bpb"],
         "random_distilled_bpb": runs["random"][j]["bpb"]}
        for j, i in enumerate(bench.compared)
    ]  # fmt: skip
    return {"pruned_mean_bpb": float(np.mean(mine)), "random_pruned_mean_bpb": float(np.mean(rand)),
            "rows": rows}  # fmt: skip


def ceiling(truth_seeds: list[list[float]]) -> dict[str, float]:
    """The truth's noise ceiling; nan with one seed (nothing to compare it with)."""
    if len(truth_seeds) > 1:
        return noise_ceiling(truth_seeds)
    names = ("tau_between_seeds", "tau_between_seeds_min", "tau_seed_vs_rest")
    return dict.fromkeys(names, float("nan"))


def fidelity(bench: PruneBench, runs: dict[str, list[Any]]) -> dict[str, Any]:
    n, seeds = len(bench.children), bench.opts["truth_seeds"]
    truth_seeds = [[r["bpb"] for r in runs["truth"][s * n : (s + 1) * n]] for s in range(seeds)]
    truth = list(np.mean(truth_seeds, axis=0))
    ladders = np.array([[b for _, b, _ in r["rungs"]] for r in runs["ladder"]])
    scores: dict[str, list[float]] = {}
    for k in range(ladders.shape[1]):
        scores[f"rung {k} ({bench.rungs.total(k)} steps distilled), seed 0"] = list(ladders[:, k])
    scores["as pruned (no training)"] = pruned_bpb(bench)
    scores["params proxy (-log active)"] = [-float(np.log10(a.active_params))
                                            for a in bench.children]  # fmt: skip
    if seeds > 1:
        scores["truth seed 0 (a single long run)"] = list(truth_seeds[0])
    return {
        "children": [describe(a) for a in bench.children],
        "active_params": [a.active_params for a in bench.children],
        "rung_steps": [bench.rungs.total(k) for k in range(ladders.shape[1])],
        "truth": {
            "steps": bench.truth_settings().steps,
            "seeds": seeds,
            "bpb_mean": truth,
            **ceiling(truth_seeds),
        },
        "scores": scores,
        "grades": {name: grade(values, truth) for name, values in scores.items()},
    }


def versus_scratch(bench: PruneBench, runs: dict[str, list[Any]]) -> list[dict[str, Any]]:
    n, rows = len(bench.children), []
    for j, i in enumerate(bench.compared):
        arch = bench.children[i]
        distilled = [runs["truth"][s * n + i]["bpb"] for s in range(bench.opts["truth_seeds"])]
        scratch = [runs["scratch"][s * len(bench.compared) + j]["bpb"]
                   for s in range(bench.opts["scratch_seeds"])]  # fmt: skip
        rows.append({
            "child": describe(arch), "active_params": arch.active_params,
            "distill_steps": bench.truth_settings().steps, "distilled_bpb": distilled,
            "scratch_steps": bench.scratch_settings(arch).steps, "scratch_bpb": scratch,
        })  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    from nas.bench._prune_report import print_report, timing

    hf_logging.disable_progress_bar()  # the parent's weights load and save: keep tables readable
    opts, overrides = split_options(argv, DEFAULTS, budget="cpu")
    check_options(opts)
    cfg = load_settings(overrides)
    bench = PruneBench(cfg, opts, overrides)
    parent_bpb = bench.pruning.reference_bpb(bench.data, bench.training)
    print(f"parent {bench.parent.directory}: {describe(bench.parent.arch)}, "
          f"{bench.parent.arch.params / 1e6:.2f}M parameters, {parent_bpb:.4f} held-out bits "
          f"per byte; {len(bench.children)} children", flush=True)  # fmt: skip
    runs = bench.run()
    out = Path(cfg.runs_dir) / "bench" / "prune.json"
    if bench.missing or any(r is None for group in runs.values() for r in group):
        print(f"{bench.missing} runs still to do; run the same command again to continue")
        return 0
    info_file = bench.parent.directory / "parent.json"
    report = {
        "parent": {
            "directory": str(bench.parent.directory), "fingerprint": bench.parent.fingerprint,
            "arch": describe(bench.parent.arch), "params": bench.parent.arch.params,
            "bpb": parent_bpb,
            "training": json.loads(info_file.read_text()) if info_file.is_file() else None,
        },
        "distill": {"lr": bench.training.lr, "temperature": bench.pruning.temperature,
                    "weight": bench.pruning.weight},
        "fidelity": fidelity(bench, runs),
        "versus_scratch": versus_scratch(bench, runs),
        "versus_random": versus_random(bench, runs),
        "timing": timing(runs),
    }  # fmt: skip
    atomic_write(out, json.dumps(report, indent=2, default=float))
    print_report(report)
    print(f"wrote {out}")
    return 0
