"""Rank fidelity of every quality proxy against longer training (Kendall tau, Spearman, top-3).

    python -m nas.bench proxy [budget=cpu] [factor=8] [archs=16] [workers=2] [limit=N] [truth=1]

Sixteen architectures spread over the space (dense and MoE, 1-4 layers, d_model 16-256, multi-query
to full multi-head, tied and untied) are trained twice from the same initialisation: once with the
budget's proxy settings (held-out bits per byte measured at 1/4, 1/2, 3/4 and the end) and once
`factor` x longer with the same schedule shape, scored on `truth_windows` held-out windows: the
ground truth. Runs are cached under `<runs_dir>/.cache/bench-proxy/`; `limit=N` starts at most N
new runs, so the bench can be run in chunks; `truth=0` runs only the short proxy runs (all that
`python -m nas.bench sampler` needs) and stops there. Writes `<runs_dir>/bench/proxy.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from scipy.stats import kendalltau, spearmanr

from nas.arch import ArchConfig
from nas.bench import split_options
from nas.bench._runs import RunSpec, describe, run_all
from nas.config.compose import load_settings
from nas.files import atomic_write
from nas.quality.data import prepare_data
from nas.quality.scorers import ExtrapolateProxy, ParamsProxy, TrainProxy, checkpoint_steps
from nas.quality.training import ProxyResult

BENCH_KEYS = {
    "factor": 8,
    "workers": 2,
    "limit": -1,
    "truth_windows": 256,
    "horizon": 8.0,
    "archs": 16,
    "truth": 1,  # 0: only the short proxy runs (the sampler bench's quality model needs no truth)
}
FRACTIONS = (0.25, 0.5, 0.75)


def _arch(
    layers: int, heads: int, head_dim: int, ratio: float, vocab: int, **kw: Any
) -> ArchConfig:
    d_model = heads * head_dim
    ffn = max(8, round(ratio * d_model / 8) * 8)  # as search_spaces.slm rounds it
    kw.setdefault("n_kv_heads", heads)
    return ArchConfig(layers, heads, kw.pop("n_kv_heads"), head_dim, ffn, vocab, **kw)


def architectures(vocab: int) -> list[ArchConfig]:
    """Within the cpu budget's caps (<= 4 layers, <= 8 heads, head_dim <= 32, <= 4 experts)."""
    return [
        _arch(1, 1, 16, 4.0, vocab),  # tiny
        _arch(1, 4, 32, 2.67, vocab),  # shallow, wide
        _arch(1, 8, 32, 4.0, vocab, n_kv_heads=2),  # shallow, widest
        _arch(4, 2, 16, 4.0, vocab),  # deep, narrow
        _arch(3, 1, 32, 4.0, vocab, tie_embeddings=False),
        _arch(2, 2, 32, 3.0, vocab, n_kv_heads=1),  # multi-query
        _arch(2, 4, 32, 4.0, vocab, n_kv_heads=2),
        _arch(2, 8, 16, 1.5, vocab, n_kv_heads=1, tie_embeddings=False),
        _arch(4, 4, 32, 2.67, vocab, tie_embeddings=False),
        _arch(3, 6, 32, 2.0, vocab, n_kv_heads=2),
        _arch(2, 4, 16, 2.0, vocab, n_experts=4, experts_per_token=1),
        _arch(4, 4, 32, 1.5, vocab, n_experts=4, experts_per_token=2, moe_every=2),
        _arch(1, 2, 32, 4.0, vocab, n_experts=4, experts_per_token=2),
        _arch(4, 6, 16, 3.0, vocab, n_kv_heads=2, n_experts=2, experts_per_token=2, moe_every=2),
        # The two costliest last, so that `archs=14` leaves them out when CPU time is short.
        _arch(4, 8, 32, 4.0, vocab),  # largest dense
        _arch(3, 8, 32, 2.0, vocab, n_kv_heads=4, n_experts=2, experts_per_token=1),
    ]


def top_k_overlap(proxy: list[float], truth: list[float], k: int = 3) -> int:
    """How many of the truly best k (lowest) are among the proxy's best k."""

    def best(xs: list[float]) -> set[int]:
        return set(sorted(range(len(xs)), key=xs.__getitem__)[:k])

    return len(best(proxy) & best(truth))


def fidelity(scores: dict[str, list[float]], truth: list[float]) -> dict[str, dict[str, float]]:
    """Kendall tau, Spearman rho and top-3 overlap of each proxy's scores against the truth."""
    return {
        name: {
            "kendall_tau": float(kendalltau(values, truth).statistic),
            "spearman": float(spearmanr(values, truth).statistic),
            "top3": top_k_overlap(values, truth),
        }
        for name, values in scores.items()
    }


def _result(record: dict[str, Any]) -> ProxyResult:
    return ProxyResult(
        bpb=record["bpb"],
        train_loss=float("nan"),
        seconds=record["seconds"],
        tokens=0,
        checkpoints=[tuple(c) for c in record["checkpoints"]],
    )


def _score(
    archs: list[ArchConfig], specs: list[RunSpec], records: dict[str, Any], horizon: float
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Every proxy's score of every architecture next to its truth, and their fidelity."""
    proxies = [
        TrainProxy(),
        ParamsProxy(),
        ExtrapolateProxy(fractions=FRACTIONS, horizon=horizon),
    ]
    rows = []
    for i, arch in enumerate(archs):
        proxy_run, truth_run = records[specs[2 * i].key()], records[specs[2 * i + 1].key()]
        row = {
            "arch": describe(arch),
            "non_embedding_params": arch.non_embedding_params,
            "truth_bpb": truth_run["bpb"],
            "proxy_seconds": proxy_run["seconds"],
            "truth_seconds": truth_run["seconds"],
        }
        for p in proxies:
            row[p.name] = p.score(arch, _result(proxy_run))
        rows.append(row)
    truth = [r["truth_bpb"] for r in rows]
    return rows, fidelity({p.name: [r[p.name] for r in rows] for p in proxies}, truth)


def _print(rows: list[dict[str, Any]], table: dict[str, dict[str, float]]) -> None:
    print(f"\n{'architecture':<38} {'non-emb':>9} {'train':>7} {'extrap':>7} {'truth':>7}")
    for r in sorted(rows, key=lambda r: r["truth_bpb"]):
        print(
            f"{r['arch']:<38} {r['non_embedding_params']:>9,} {r['train']:>7.4f} "
            f"{r['extrapolate']:>7.4f} {r['truth_bpb']:>7.4f}"
        )
    print(f"\n{'proxy':<12} {'kendall tau':>11} {'spearman':>9} {'top-3':>6} {'cost':>16}")
    cost = sum(r["proxy_seconds"] for r in rows) / sum(r["truth_seconds"] for r in rows)
    for name, m in table.items():
        spent = "0 (no training)" if name == "params" else f"{cost:.1%} of truth"
        print(
            f"{name:<12} {m['kendall_tau']:>11.3f} {m['spearman']:>9.3f} {m['top3']:>4}/3 "
            f"{spent:>16}"
        )


def main(argv: list[str]) -> int:
    opts, overrides = split_options(argv, BENCH_KEYS, budget="cpu")
    cfg = load_settings(overrides)
    data, tokenizer, info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
    tag = hashlib.sha256(f"{info['corpus_fingerprint']}{tokenizer.to_str()}".encode()).hexdigest()
    short = cfg.proxy.training
    long = dataclasses.replace(
        short, steps=short.steps * opts["factor"], eval_windows=opts["truth_windows"]
    )
    archs = architectures(info["vocab_size"])[: opts["archs"]]
    specs = []
    for arch in archs:
        specs.append(RunSpec(arch, short, tuple(checkpoint_steps(FRACTIONS, short.steps)), 0, tag))
        if opts["truth"]:
            specs.append(
                RunSpec(arch, long, tuple(checkpoint_steps(FRACTIONS, long.steps)), 0, tag)
            )
    print(
        f"proxy bench: {len(archs)} architectures; proxy {short.steps} steps x "
        f"{short.batch_size} x {short.seq_len} tokens; truth {long.steps} steps, "
        f"{long.eval_windows} held-out windows"
    )
    cache = Path(cfg.cache_dir) / "bench-proxy"
    limit = None if opts["limit"] < 0 else opts["limit"]
    records, missing = run_all(specs, data, cache, workers=opts["workers"], limit=limit)
    if missing:
        print(f"{missing} runs still to do; run the same command again to continue")
        return 0
    if not opts["truth"]:
        print(f"{len(records)} short proxy runs cached in {cache}; truth=1 adds the long runs")
        return 0

    rows, table = _score(archs, specs, records, opts["horizon"])
    _print(rows, table)
    out = Path(cfg.runs_dir) / "bench" / "proxy.json"
    atomic_write(
        out,
        json.dumps(
            {
                "short": dataclasses.asdict(short),
                "truth": dataclasses.asdict(long),
                "fidelity": table,
                "rows": rows,
            },
            indent=2,
        ),
    )
    print(f"\nwrote {out}")
    return 0
