"""`python -m nas.bench compression parts=formats`: int8/int4 in each runtime's numerics.

On each trained bench model, round-to-nearest int8 g128, int4 g128 and int4 g32 are scored twice:
in ONNX Runtime's numerics (MatMulNBits grid, int8 activations per block: `runtime=onnxruntime`)
and in ExecuTorch's XNNPACK numerics (torchao's int8 per channel or int4 per group with bf16
scales, int8 activations per token, experts float: `runtime=executorch`). Before the XNNPACK
numerics existed, an ExecuTorch study scored its candidates in ONNX Runtime's; the paired
difference between the two says how far off that was.

Then the check that matters: the same trained model exported to a `.pte` in that format and
stepped one token at a time through the first `pte_windows` held-out windows in ExecuTorch's
runtime, against the bits the search's XNNPACK-scored model gives on those windows.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.bench._compression_eval import delta, window_bits
from nas.compression import compress
from nas.config.schema import CompressionSettings, ProxySettings
from nas.quality.training import ProxyData, eval_windows

FORMATS = ((8, 128), (4, 128), (4, 32))  # (bits, group): int8's group is ONNX Runtime's only
NUMERICS = {
    "matmulnbits": CompressionSettings(int8_activations=True, quant_format="matmulnbits"),
    "xnnpack": CompressionSettings(int8_activations=True, quant_format="xnnpack"),
}


def program_window_bits(path: Path, windows: np.ndarray) -> np.ndarray:
    """Summed next-token loss in bits of each window, from a decode `.pte` stepped one token at
    a time (its cache written in place from position 0: each window starts over)."""
    from nas.executorch.runtime import load_method

    program = load_method(path)
    out = []
    for window in torch.from_numpy(windows):
        ids = window[:-1].view(1, -1)
        logits = torch.cat([
            program.run([ids[:, p : p + 1], torch.tensor([[p]])])[0][0]
            for p in range(ids.shape[1])
        ])  # fmt: skip
        nll = torch.nn.functional.cross_entropy(logits.float(), window[1:], reduction="sum")
        out.append(float(nll) / math.log(2))
    return np.array(out)


def format_rows(
    name: str,
    trained: torch.nn.Module,
    arch: ArchConfig,
    data: ProxyData,
    settings: ProxySettings,
    base_bits: np.ndarray,
    total: int,
    *,
    seed: int,
    pte_windows: int,
    formats: tuple[tuple[int, int], ...] = FORMATS,
) -> list[dict[str, Any]]:
    """One row per format: Δbpb in each numerics, their paired difference, and the `.pte`'s bits
    against the XNNPACK-scored model's on the first `pte_windows` windows."""
    from nas.executorch.export import export_pte

    windows = eval_windows(data.heldout_ids, settings)[:pte_windows]
    some_bytes = int(data.token_bytes[windows[:, 1:]].sum())
    rows = []
    for bits, group in formats:
        started = time.perf_counter()
        candidate = Candidate(arch, CompressionConfig(weight_bits=bits, group_size=group))
        row: dict[str, Any] = {"table": "formats", "model": name, "seed": seed,
                               "variant": f"rtn int{bits} g{group}"}  # fmt: skip
        scored = {}
        for numerics, how in NUMERICS.items():
            done = compress(copy.deepcopy(trained), candidate, settings=how)
            with torch.no_grad():
                scored[numerics] = window_bits(done.model, data, settings)
            d, se = delta(scored[numerics], base_bits, total)
            row[numerics] = {"delta": d, "delta_se": se,
                             "recipe": asdict(done.recipe.quantization)}  # fmt: skip
        d, se = delta(scored["xnnpack"], scored["matmulnbits"], total)
        row["xnnpack_minus_matmulnbits"] = {"delta": d, "delta_se": se}
        with tempfile.TemporaryDirectory() as folder:
            path = export_pte(
                copy.deepcopy(trained), Path(folder) / "decode.pte", weight_bits=bits,
                group_size=group if bits == 4 else None, context_len=settings.seq_len,
            )  # fmt: skip
            program = program_window_bits(path, windows)
        mine = scored["xnnpack"][: len(windows)]
        row["pte"] = {
            "windows": len(windows),
            "bpb": float(program.sum() / some_bytes),
            "scored_bpb": float(mine.sum() / some_bytes),
            "max_window_bits_diff": float(np.abs(program - mine).max()),
            "window_bits_mean": float(mine.mean()),
        }
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(
            f"  {row['variant']}: Δ ORT {row['matmulnbits']['delta']:+.4f}, Δ XNNPACK "
            f"{row['xnnpack']['delta']:+.4f}; .pte bpb {row['pte']['bpb']:.5f} vs scored "
            f"{row['pte']['scored_bpb']:.5f}",
            flush=True,
        )
    return rows


def formats_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each format's Δbpb in both numerics, their difference, and the `.pte` check."""
    lines = [
        "| model | seed | format | Δbpb, ONNX Runtime numerics | Δbpb, XNNPACK numerics | "
        "XNNPACK - ONNX Runtime | .pte bpb vs scored (windows) | max Δ bits per window |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pte = r["pte"]
        deltas = [r[k] for k in ("matmulnbits", "xnnpack", "xnnpack_minus_matmulnbits")]
        cells = [f"{d['delta']:+.4f} ±{d['delta_se']:.4f}" for d in deltas]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['variant']} | {' | '.join(cells)} "
            f"| {pte['bpb']:.5f} vs {pte['scored_bpb']:.5f} ({pte['windows']}) "
            f"| {pte['max_window_bits_diff']:.2g} of {pte['window_bits_mean']:.0f} |"
        )
    return "\n".join(lines)
