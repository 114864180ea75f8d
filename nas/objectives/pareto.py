"""The Pareto front of a study, written as pareto.json / pareto.csv and printed as a table.

Entry format (users and later tooling read these names): `trial`, `arch` {n_layers, d_model,
n_heads, n_kv_heads, head_dim, ffn_dim, n_experts, experts_per_token, moe_every, tie_embeddings,
vocab_size}, `compression` {weight_bits, group_size, sparsity, sparsity_pattern, quant_method,
prune_method}, `metrics` {bpb, bpb_sd, seeds, decode_ms, prefill_ms, memory_mb, params,
active_params, ...}, `quality` {bpb, sd, basis: what the front judges it on}, `rung` (where it
was measured), `within_noise_of` (front neighbours whose difference from it is within the seed
noise).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from nas import records
from nas.arch import CompressionConfig, bits_label, experts_label, method_label
from nas.fidelity.judge import Judged, judge, noise_sd
from nas.fidelity.noise import within_noise
from nas.files import atomic_write

ARCH_KEYS = (
    "n_layers d_model n_heads n_kv_heads head_dim ffn_dim n_experts experts_per_token moe_every "
    "tie_embeddings vocab_size"
).split()


def pareto_entries(study: optuna.Study) -> list[dict[str, Any]]:
    """The front's entries, best judged quality first, each marked with the neighbours its lead
    over is within the seed noise."""
    judged = judge(study.get_trials(deepcopy=False), records.target(study))
    members = sorted(
        (j for j in non_dominated(judged) if j.record.stands_for_itself),
        key=lambda j: (j.quality, j.record.number),
    )
    noise = noise_sd(judged)
    by_decode = sorted(members, key=lambda j: j.point[1:])
    close: dict[int, list[int]] = {j.record.number: [] for j in members}
    for a, b in itertools.pairwise(by_decode):
        if within_noise(a.seeds, b.seeds, noise):
            close[a.record.number].append(b.record.number)
            close[b.record.number].append(a.record.number)
    return [entry(j, sorted(close[j.record.number])) for j in members]


def entry(judged: Judged, within_noise_of: Sequence[int] = ()) -> dict[str, Any]:
    """One member as pareto.json lists it."""
    record = judged.record
    shrink = {}
    if record.shrink:  # "train this shape, then prune to `arch`": what was trained and removed
        trained = record.shrink["trained"]
        shrink = {"shrink": {**record.shrink, "trained": {k: trained[k] for k in ARCH_KEYS}}}
    return {
        "trial": record.number,
        "arch": {k: record.arch[k] for k in ARCH_KEYS},
        **shrink,
        # Through the dataclass, as export reads it: records from before quant_method and
        # prune_method existed get their defaults (rtn, magnitude), which is what they ran.
        "compression": CompressionConfig(**record.compression).to_dict(),
        "metrics": record.metrics,
        "quality": {"bpb": judged.quality, "sd": judged.sd, "basis": judged.basis},
        "rung": record.rungs[-1]["rung"] if record.rungs else 0,
        "within_noise_of": list(within_noise_of),
    }


def non_dominated(judged: Sequence[Judged]) -> list[Judged]:
    """The judged candidates no other one dominates (all objectives minimised), in trial order;
    equal points are all kept."""
    front = IncrementalFront()
    for j in sorted(judged, key=lambda j: j.record.number):
        front.add(j.point, j)
    return front.items


def front_members(
    trials: Sequence[optuna.trial.FrozenTrial], target: dict[str, Any] | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Top-rung candidates no other dominates, each standing for itself
    (`nas.records.stands_for_itself`): what pareto.json, the report and `export trial=pareto`
    list. `target`: the study's (`nas.records.target`)."""
    return [j.trial for j in non_dominated(judge(trials, target)) if j.record.stands_for_itself]


class IncrementalFront:
    """A non-dominated set kept up to date one point at a time (all objectives minimised).

    Exact, because dominance is transitive: a point a newcomer dominates stays dominated. A long
    study then costs one vectorised comparison against the front per trial, not a sort of every
    trial. Equal points are all kept; `items` stay in the order they were added."""

    def __init__(self) -> None:
        self.points = np.empty((0, 0))
        self.items: list[Any] = []

    def add(self, values: Sequence[float], item: Any) -> bool:
        """Offer `item` with objective `values`; True when the front changed."""
        v = np.asarray(values, dtype=float)
        if not self.items:
            self.points, self.items = v[None, :], [item]
            return True
        p = self.points
        if np.any(np.all(p <= v, axis=1) & np.any(p < v, axis=1)):
            return False
        keep = ~(np.all(v <= p, axis=1) & np.any(v < p, axis=1))
        self.points = np.vstack([p[keep], v])
        self.items = [t for t, k in zip(self.items, keep, strict=True) if k] + [item]
        return True


def to_csv(entries: list[dict[str, Any]]) -> str:
    rows = [
        {
            "trial": e["trial"],
            "quality_bpb": e["quality"]["bpb"],
            "quality_sd": e["quality"]["sd"],
            "quality_basis": e["quality"]["basis"],
            "rung": e["rung"],
            **e["arch"],
            **e["compression"],
            "pruned_from": shrink_label(e),
            **e["metrics"],
        }
        for e in entries
    ]
    out = io.StringIO()
    if rows:
        names = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(out, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def write_front(entries: list[dict[str, Any]], out_dir: Path, header: dict[str, Any]) -> None:
    atomic_write(out_dir / "pareto.json", json.dumps({**header, "pareto": entries}, indent=2))
    atomic_write(out_dir / "pareto.csv", to_csv(entries))


def shrink_label(entry: dict[str, Any]) -> str:
    """`4L h8/4 ffn512 +distill`: the shape a shrink member was trained at (`-`: as deployed),
    and the recovery it got after pruning."""
    shrink = entry.get("shrink")
    if not shrink:
        return "-"
    t = shrink["trained"]
    experts = f" e{t['n_experts']}" if t["n_experts"] > 1 else ""
    recovery = "" if shrink["recovery"] == "none" else f" +{shrink['recovery']}"
    return (
        f"{t['n_layers']}L h{t['n_heads']}/{t['n_kv_heads']} ffn{t['ffn_dim']}{experts}{recovery}"
    )


def format_table(entries: list[dict[str, Any]]) -> str:
    """A fixed-width table of the front for the console (`~`: its lead over a neighbour on the
    front is within the seed noise)."""
    columns = [
        ("trial", lambda e: e["trial"]),
        ("bpb", lambda e: f"{e['quality']['bpb']:.3f}" + ("~" if e["within_noise_of"] else "")),
        ("± sd", lambda e: f"{e['quality']['sd']:.3f}"),
        ("rung", lambda e: e["rung"]),
        ("decode ms", lambda e: f"{e['metrics']['decode_ms']:.2f}"),
        ("tok/s", lambda e: f"{1000 / e['metrics']['decode_ms']:.0f}"),
        ("prefill ms", lambda e: f"{e['metrics']['prefill_ms']:.1f}"),
        ("mem MB", lambda e: f"{e['metrics']['memory_mb']:.0f}"),
        ("params", lambda e: f"{e['metrics']['params'] / 1e6:.2f}M"),
        ("layers", lambda e: e["arch"]["n_layers"]),
        ("d", lambda e: e["arch"]["d_model"]),
        ("heads/kv", lambda e: f"{e['arch']['n_heads']}/{e['arch']['n_kv_heads']}"),
        ("ffn", lambda e: e["arch"]["ffn_dim"]),
        ("experts", lambda e: experts_label(e["arch"])),
        ("tied", lambda e: "yes" if e["arch"]["tie_embeddings"] else "no"),
        (
            "bits",
            lambda e: method_label(bits_label(e["compression"]), e["compression"], "quant_method"),
        ),
        (
            "sparsity",
            lambda e: method_label(
                e["compression"]["sparsity_pattern"], e["compression"], "prune_method"
            ),
        ),
    ]
    if any("shrink" in e for e in entries):
        columns.append(("pruned from", shrink_label))
    cells = [[str(name) for name, _ in columns]]
    cells += [[str(get(e)) for _, get in columns] for e in entries]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
