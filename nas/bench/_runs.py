"""Cached training runs for the benchmarks: one JSON file per (architecture, settings, seed).

Long runs are the expensive part of the proxy benchmark, so each finished run is written to disk
and never repeated; `limit=` bounds how many new runs one invocation starts, so a long job can be
run in chunks under the shared CPU lock. Runs go to single-threaded worker processes, one per core,
which keeps per-step cost stable on a shared machine.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig
from nas.files import atomic_write
from nas.quality.training import ProxyData, ProxySettings, train_proxy


@dataclass(frozen=True)
class RunSpec:
    arch: ArchConfig
    settings: ProxySettings
    checkpoints: tuple[int, ...]
    seed: int
    data_tag: str  # names the corpus + tokenizer the run trains on

    def key(self) -> str:
        payload = json.dumps(
            [
                self.arch.to_dict(),
                asdict(self.settings),
                self.checkpoints,
                self.seed,
                self.data_tag,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cached(spec: RunSpec, cache: Path) -> dict[str, Any] | None:
    path = cache / f"{spec.key()}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _run(job: tuple[RunSpec, ProxyData, Path]) -> dict[str, Any]:
    import torch

    spec, data, cache = job
    torch.set_num_threads(1)
    result = train_proxy(
        spec.arch, data, spec.settings, seed=spec.seed, checkpoints=spec.checkpoints
    )
    record = {
        "arch": spec.arch.to_dict(),
        "settings": asdict(spec.settings),
        "seed": spec.seed,
        "bpb": result.bpb,
        "seconds": result.seconds,
        "checkpoints": result.checkpoints,
        "curve": result.curve,
    }
    atomic_write(cache / f"{spec.key()}.json", json.dumps(record))
    return record


def run_all(
    specs: list[RunSpec], data: ProxyData, cache: Path, *, workers: int, limit: int | None
) -> tuple[dict[str, dict[str, Any]], int]:
    """Records of every spec that is cached or was run now; and how many are still missing."""
    cache.mkdir(parents=True, exist_ok=True)
    records = {s.key(): r for s in specs if (r := cached(s, cache)) is not None}
    todo = [s for s in specs if s.key() not in records]
    now = todo if limit is None else todo[:limit]
    if now:
        context = multiprocessing.get_context("spawn")
        with context.Pool(max(1, min(workers, len(now)))) as pool:
            for spec, record in zip(
                now, pool.imap(_run, [(s, data, cache) for s in now]), strict=True
            ):
                records[spec.key()] = record
                print(
                    f"  trained {describe(spec.arch)} {spec.settings.steps} steps: "
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
