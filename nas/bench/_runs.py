"""Cached training runs for the benchmarks: one JSON file per (architecture, settings, seed, ...).

Long runs are the expensive part of the fidelity benchmarks, so each finished run is written to
disk and never repeated; `limit=` bounds how many new runs one invocation starts, so a long job
can be run in chunks. Runs go to single-threaded worker processes, one per core, which keeps
per-step cost stable on a shared machine. Three kinds of run:

- a plain run of `settings.steps` (`train_proxy`), with held-out checkpoints;
- a ladder (`rungs`: rung lengths): one warmup-stable-decay run carried on through the rungs,
  each measured after its decay branch, as the search's ladder measures them;
- either of them followed by a `compression` of the trained model, scored again.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.config.schema import ProxySettings
from nas.fidelity.rungs import decay_steps
from nas.files import atomic_write
from nas.quality.training import ProxyData, ProxyRun, train_proxy


@dataclass(frozen=True)
class RunSpec:
    arch: ArchConfig
    settings: ProxySettings
    checkpoints: tuple[int, ...]
    seed: int
    data_tag: str  # names the corpus + tokenizer the run trains on
    rungs: tuple[int, ...] = ()  # a ladder through these rung lengths (wsd), else one run
    compression: CompressionConfig | None = None  # scored again after this compression

    def key(self) -> str:
        parts: list[Any] = [
            self.arch.to_dict(),
            asdict(self.settings),
            self.checkpoints,
            self.seed,
            self.data_tag,
        ]
        if self.rungs:  # new fields only when set: older cached runs keep their keys
            parts.append({"rungs": list(self.rungs)})
        if self.compression is not None:
            parts.append({"compression": self.compression.to_dict()})
        payload = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached(spec: RunSpec, cache: Path) -> dict[str, Any] | None:
    path = cache / f"{spec.key()}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ladder(spec: RunSpec, data: ProxyData) -> dict[str, Any]:
    """One run carried on through `spec.rungs`, each measured after its own decay branch."""
    started = time.perf_counter()
    run = ProxyRun(spec.arch, data, spec.settings, seed=spec.seed)
    measured = []
    for total in spec.rungs:
        run.advance(total - decay_steps(total, spec.settings.decay_fraction))
        branch = run.branch(decay_steps(total, spec.settings.decay_fraction))
        measured.append((total, branch.evaluate(), time.perf_counter() - started))
    return {"bpb": measured[-1][1], "seconds": time.perf_counter() - started, "rungs": measured}


def _run(job: tuple[RunSpec, ProxyData, Path]) -> dict[str, Any]:
    import torch

    from nas.compression import score_compressed

    spec, data, cache = job
    torch.set_num_threads(1)
    record: dict[str, Any] = {"arch": spec.arch.to_dict(), "settings": asdict(spec.settings)}
    record["seed"] = spec.seed
    if spec.rungs:
        record.update(_ladder(spec, data))
    else:
        result = train_proxy(
            spec.arch, data, spec.settings, seed=spec.seed, checkpoints=spec.checkpoints
        )
        record.update(bpb=result.bpb, seconds=result.seconds, checkpoints=result.checkpoints)
        record["curve"] = result.curve
        if spec.compression is not None:
            assert result.model is not None
            candidate = Candidate(spec.arch, spec.compression)
            compressed, _ = score_compressed(
                result.model, candidate, data, spec.settings, seed=spec.seed
            )
            record["compression"] = spec.compression.to_dict()
            record["bpb_compressed"] = result.bpb if compressed is None else compressed
    atomic_write(cache / f"{spec.key()}.json", json.dumps(record))
    return record


def run_all(
    specs: list[RunSpec], data: ProxyData, cache: Path, *, workers: int, limit: int | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """Records of every spec that is cached or was run now; and how many are still missing."""
    cache.mkdir(parents=True, exist_ok=True)
    records = {s.key(): r for s in specs if (r := cached(s, cache)) is not None}
    todo = list({s.key(): s for s in specs if s.key() not in records}.values())
    now = todo if limit is None else todo[:limit]
    if now:
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, min(workers, len(now)))) as pool:
            for spec, record in zip(
                now, pool.imap(_run, [(s, data, cache) for s in now]), strict=True
            ):
                records[spec.key()] = record
                steps = "/".join(map(str, spec.rungs)) if spec.rungs else spec.settings.steps
                print(
                    f"  trained {describe(spec.arch)} {steps} steps seed {spec.seed}: "
                    f"bpb {record['bpb']:.4f} in {record['seconds']:.0f} s",
                    flush=True,
                )
    return records, len(todo) - len(now)


def describe(arch: ArchConfig) -> str:
    """A short name such as `L4 d256 h8/kv2 ffn512 moe4x2/2 untied`."""
    text = f"L{arch.n_layers} d{arch.d_model} h{arch.n_heads}/kv{arch.n_kv_heads} ffn{arch.ffn_dim}"
    if arch.n_experts > 1:
        text += f" moe{arch.n_experts}x{arch.experts_per_token}/{arch.moe_every}"
    return text + ("" if arch.tie_embeddings else " untied")
