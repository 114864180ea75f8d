"""The prune bench's training: its parent (trained once, cached as a checkpoint directory) and its
cached child runs, one JSON file each, in single-threaded worker processes as `nas.bench._runs`.

Three kinds of child run, all through the library's own `ProxyRun`:
- `ladder`: a prune study's ladder (the child pruned out of the parent, distilled from it, wsd),
  measured at each rung after its decay branch exactly as `TrialObjective.start_run` and the
  ladder measure them;
- `distill`: one longer distillation run of `settings.steps` (the ground truth);
- `scratch`: the same shape trained from scratch, no teacher (`train_proxy`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.arch import ArchConfig
from nas.bench._runs import describe
from nas.config.schema import ProxySettings
from nas.files import atomic_write
from nas.quality.training import ProxyData, ProxyRun, rung_span, train_proxy

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from nas.fidelity.rungs import Rungs
    from nas.quality.pruned import Pruning

KINDS = ("ladder", "distill", "scratch")


def forward_params(arch: ArchConfig) -> int:
    """Weights one token's forward pass multiplies by (2 FLOPs each): the active block weights
    and the LM head; the input embedding is a lookup."""
    return arch.active_params - arch.embedding_params + arch.vocab_size * arch.d_model


def scratch_steps(child: ArchConfig, parent: ArchConfig, distill_steps: int) -> int:
    """Steps from scratch with the FLOPs of `distill_steps` distillation steps: each of those
    is the child's forward and backward (6 N_child per token) plus the parent's forward
    (2 N_parent)."""
    ratio = 1.0 + 2.0 * forward_params(parent) / (6.0 * forward_params(child))
    return round(distill_steps * ratio)


@dataclass(frozen=True)
class ChildRun:
    arch: ArchConfig
    settings: ProxySettings
    seed: int
    tag: str  # names the data, the parent's weights and the distillation settings
    kind: str  # one of KINDS
    rungs: tuple[int, ...] = ()  # a ladder's rung indices

    def key(self) -> str:
        parts = [self.arch.to_dict(), asdict(self.settings), self.seed, self.tag, self.kind]
        payload = json.dumps([*parts, list(self.rungs)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _ladder(spec: ChildRun, pruning: Pruning, data: ProxyData, rungs: Rungs) -> dict[str, Any]:
    started = time.perf_counter()
    run = pruning.run(spec.arch, data, spec.settings, seed=spec.seed)
    measured = []
    for rung in spec.rungs:
        trunk, decay = rung_span(rungs, spec.settings, rung)
        run.advance(trunk)
        branch = run.branch(decay) if decay else run
        measured.append((rungs.total(rung), branch.evaluate(), time.perf_counter() - started))
    return {"bpb": measured[-1][1], "rungs": measured, "seconds": time.perf_counter() - started}


def _run(job: tuple[ChildRun, Pruning, ProxyData, Rungs, Path]) -> dict[str, Any]:
    import torch
    from transformers.utils import logging as hf_logging

    spec, pruning, data, rungs, cache = job
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()  # each run loads the parent: keep the log readable
    record: dict[str, Any] = {"arch": spec.arch.to_dict(), "kind": spec.kind, "seed": spec.seed}
    record["steps"] = spec.settings.steps
    if spec.kind == "ladder":
        record.update(_ladder(spec, pruning, data, rungs))
        record["steps"] = rungs.ladder_cost(spec.rungs[-1])  # the trunk and every decay branch
    elif spec.kind == "distill":
        started = time.perf_counter()
        run = pruning.run(spec.arch, data, spec.settings, seed=spec.seed)
        run.advance(spec.settings.steps)  # cosine: the run decays to its own end
        record.update(bpb=run.evaluate(), seconds=time.perf_counter() - started)
    else:
        result = train_proxy(spec.arch, data, spec.settings, seed=spec.seed)
        record.update(bpb=result.bpb, seconds=result.seconds)
    atomic_write(cache / f"{spec.key()}.json", json.dumps(record))
    return record


def run_children(
    specs: list[ChildRun],
    pruning: Pruning,
    data: ProxyData,
    rungs: Rungs,
    cache: Path,
    *,
    workers: int,
    limit: int | None,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Records of every spec that is cached or was run now; and how many are still missing."""
    cache.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = cache / f"{spec.key()}.json"
        if path.exists():
            records[spec.key()] = json.loads(path.read_text())
    todo = list({s.key(): s for s in specs if s.key() not in records}.values())
    now = todo if limit is None else todo[:limit]
    if now:
        context = multiprocessing.get_context("spawn")
        jobs = [(s, pruning, data, rungs, cache) for s in now]
        with context.Pool(max(1, min(workers, len(now)))) as pool:
            for spec, record in zip(now, pool.imap(_run, jobs), strict=True):
                records[spec.key()] = record
                print(
                    f"  trained {spec.kind} {describe(spec.arch)} {spec.settings.steps} steps "
                    f"seed {spec.seed}: bpb {record['bpb']:.4f} in {record['seconds']:.0f} s",
                    flush=True,
                )
    return records, len(todo) - len(now)


def _pretrain(
    arch: ArchConfig, data: ProxyData, settings: ProxySettings
) -> tuple[ProxyRun, float, float]:
    started = time.perf_counter()
    run = ProxyRun(arch, data, settings, seed=0)
    report = max(1, settings.steps // 10)
    for mark in range(report, settings.steps + report, report):
        run.advance(min(mark, settings.steps))
        elapsed = time.perf_counter() - started
        print(f"  parent: step {run.step}/{settings.steps}, loss {run.loss:.3f}, {elapsed:.0f} s",
              flush=True)  # fmt: skip
    return run, run.evaluate(), time.perf_counter() - started


def train_parent(
    arch: ArchConfig,
    data: ProxyData,
    settings: ProxySettings,
    tokenizer: Tokenizer,
    directory: Path,
) -> dict[str, Any]:
    """Train `arch` from scratch with the proxy's own training (cosine over `settings.steps`),
    then save it with `save_pretrained` (safetensors) beside the tokenizer's tokenizer.json in
    `directory`, written whole or not at all. Returns what `parent.json` records."""
    import torch

    threads = torch.get_num_threads()
    # One thread, as the child runs: on 2 shared cores 2 threads oversubscribe them (measured
    # 5.0 s a step against 0.40 with one thread, under a load of 5).
    torch.set_num_threads(1)
    try:
        run, bpb, seconds = _pretrain(arch, data, settings)
    finally:
        torch.set_num_threads(threads)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    run.model.eval().save_pretrained(partial)
    tokenizer.save(str(partial / "tokenizer.json"))
    info = {
        "arch": arch.to_dict(),
        "params": arch.params,
        "steps": settings.steps,
        "settings": asdict(settings),
        "bpb": bpb,
        "seconds": seconds,
        "seconds_per_step": seconds / settings.steps,
    }
    atomic_write(partial / "parent.json", json.dumps(info, indent=2))
    partial.rename(directory)
    return info
