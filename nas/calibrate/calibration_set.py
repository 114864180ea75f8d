"""The architectures a device is measured on, and measuring them in its runtime (ONNX Runtime or
ExecuTorch: `nas.calibrate.runtimes`).

`calibration_set` draws candidates spread over the search space (dense, grouped-query, MoE; fp,
int8, int4), each architecture with two compressions so one float export serves both. Architectures,
not candidates, are split between fitting and held-out evaluation, so a held-out number never
comes from an architecture the fit has seen.

`measure_rows` exports each candidate (cached by architecture and conditions) and times decode (at
the device's context and at its long one, `DeployBudget.long_context`) and prefill in separate
fresh processes, `rounds` times with the candidates interleaved in a new order
each round; a graph's figure is the median over rounds and its spread the range over rounds. A
round is flagged noisy (`round_noise`) when the load average or steal time says another process
ran, or when the memory probes taken before each point ran slower than in the quietest round
(`nas.onnx.quiet.MemoryProbe`).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.calibrate.runtimes import Timing, calibration_runtime
from nas.hardware import HardwareProfile
from nas.onnx.quiet import MemoryProbe, Quiet, memory_noise, round_slowdowns
from predictors.conditions import activations_of, decode_form_of, moe_kernel_of

# Choices spanning the search space at sizes this kind of device runs (1M-60M parameters).
LAYERS = (2, 3, 4, 6, 8, 12)
HEADS = (2, 4, 6, 8, 12)
HEAD_DIM = (32, 64)
FFN_RATIO = (2.0, 2.67, 4.0)
EXPERTS = (1, 1, 1, 4, 8)  # dense twice as likely: most of the space is dense
VOCAB = (2048, 8192)
COMPRESSIONS = (
    CompressionConfig(),
    CompressionConfig(weight_bits=8, group_size=128),
    CompressionConfig(weight_bits=4, group_size=32),
    CompressionConfig(weight_bits=4, group_size=128),
)
MAX_PARAMS = 60_000_000


@dataclass(frozen=True)
class CalibrationPoint:
    """One candidate to measure, its id, and whether the fit may see it."""

    id: str
    candidate: Candidate
    split: str  # "fit" | "heldout"


def _draw_arch(rng: random.Random) -> ArchConfig:
    while True:
        heads = rng.choice(HEADS)
        head_dim = rng.choice(HEAD_DIM)
        d_model = heads * head_dim
        experts = rng.choice(EXPERTS)
        arch = ArchConfig(
            n_layers=rng.choice(LAYERS),
            n_heads=heads,
            n_kv_heads=rng.choice([k for k in (1, 2, 4, heads) if heads % k == 0]),
            head_dim=head_dim,
            ffn_dim=max(8, round(rng.choice(FFN_RATIO) * d_model / 8) * 8),
            vocab_size=rng.choice(VOCAB),
            n_experts=experts,
            experts_per_token=rng.choice((1, 2)) if experts > 1 else 1,
            moe_every=rng.choice((1, 2)) if experts > 1 else 1,
            tie_embeddings=rng.random() < 0.5,
        )
        if 1_000_000 <= arch.params <= MAX_PARAMS:
            return arch


def calibration_set(
    *, n_fit: int = 20, n_heldout: int = 30, seed: int = 0
) -> list[CalibrationPoint]:
    """`n_fit` + `n_heldout` candidates; two compressions per architecture; split by arch."""
    rng = random.Random(seed)
    points: list[CalibrationPoint] = []
    for split, count in (("fit", n_fit), ("heldout", n_heldout)):
        made = 0
        while made < count:
            arch = _draw_arch(rng)
            if split == "fit":  # cycle through the formats so every one gets fitted
                i = made // 2
                pair = [COMPRESSIONS[i % 4], COMPRESSIONS[(i + 1 + i // 4) % 4]]
            else:
                pair = rng.sample(COMPRESSIONS, 2)
            for compression in pair[: count - made]:
                candidate = Candidate(arch, compression)
                points.append(
                    CalibrationPoint(
                        f"{split[0]}{len(points):02d}-{candidate.key()[:8]}", candidate, split
                    )
                )
                made += 1
    return points


def export_point(
    point: CalibrationPoint,
    hardware: HardwareProfile,
    cache_dir: Path,
    phases: tuple[str, ...] = ("decode", "prefill"),
) -> dict[str, Path]:
    """The model files of a point (those in `phases`) in the profile's runtime, cached under
    `cache_dir`."""
    runtime = calibration_runtime(hardware.runtime)
    return runtime.export(point.candidate, hardware, cache_dir, phases)


def export_long_decode(point: CalibrationPoint, hardware: HardwareProfile, cache_dir: Path) -> Path:
    """The decode file of a point at the device's long context, where the KV cache weighs
    more: without it the KV coefficient is barely identified at one context."""
    long = hardware.at_context(hardware.deploy.long_context)
    return export_point(point, long, cache_dir, phases=("decode",))["decode"]


def cache_folder(runs_dir: Path, hardware: HardwareProfile) -> Path:
    """Where a runtime's calibration model files are cached (named by what made them)."""
    return runs_dir / ".cache" / ("onnx" if hardware.runtime == "onnxruntime" else hardware.runtime)


PHASES = ("decode", "prefill", "decode_long")
RUNS = {"decode": 40, "prefill": 12, "decode_long": 40}  # timed runs of one file per round


def measure_rows(
    points: list[CalibrationPoint],
    hardware: HardwareProfile,
    cache_dir: Path,
    *,
    rounds: int = 3,
    threads: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Export and time every point in the profile's runtime; one result row per point (see
    module docstring)."""
    threads = threads or hardware.threads
    runtime = calibration_runtime(hardware.runtime)
    exported: dict[str, dict[str, Path]] = {}
    for i, point in enumerate(points):
        started = time.perf_counter()
        exported[point.id] = {
            **export_point(point, hardware, cache_dir),
            "decode_long": export_long_decode(point, hardware, cache_dir),
        }
        log(f"export {i + 1}/{len(points)} {point.id}: {time.perf_counter() - started:.1f} s")
    samples: dict[tuple[str, str], list[Timing]] = {}
    rng = random.Random(seed)
    noise = []  # per round: why the machine was not quiet while it ran ("" when it was)
    probe, probes = MemoryProbe(), []  # per round: a memory probe before each point, ms
    probed: dict[str, list[float]] = {}  # per point: its probe in each round, ms
    for r in range(rounds):
        order = list(points)
        rng.shuffle(order)
        before = Quiet.now()
        probes.append([])
        for point in order:
            probes[-1].append(probe())
            probed.setdefault(point.id, []).append(round(probes[-1][-1], 2))
            for phase in PHASES:
                path = exported[point.id][phase]
                m = runtime.time(path, threads=threads, warmup=5, runs=RUNS[phase], max_seconds=4.0)
                samples.setdefault((point.id, phase), []).append(m)
        noise.append(Quiet.now().noise(threads, before, own_load=threads))
        log(f"round {r + 1}/{rounds} measured" + (f" (noisy: {noise[-1]})" if noise[-1] else ""))
    slowdowns = round_slowdowns(probes)  # 1.0: the quietest round
    for r, slowdown in enumerate(slowdowns):
        if memory := memory_noise(slowdown):
            noise[r] = "; ".join(why for why in (noise[r], memory) if why)
            log(f"round {r + 1}: {memory}")
    probe_rounds = [round(x, 3) for x in slowdowns]
    rows = [_row(point, samples, hardware, threads) for point in points]
    return [
        {
            **row,
            "round_noise": noise,
            "memory_probe_rounds": probe_rounds,
            "memory_probe_ms": probed[row["id"]],  # the probe before this point, by round
        }
        for row in rows
    ]


def _row(point, samples, hardware: HardwareProfile, threads: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": point.id,
        "split": point.split,
        "device": hardware.name,
        "arch": point.candidate.arch.to_dict(),
        "compression": point.candidate.compression.to_dict(),
        "context_len": hardware.deploy.context_len,
        "long_context_len": hardware.deploy.long_context,
        "prompt_len": hardware.deploy.prompt_len,
        "threads": threads,
        "activations": activations_of(hardware),
        "date": time.strftime("%Y-%m-%d"),
    }
    for phase in PHASES:
        medians = [m.median_ms for m in samples[(point.id, phase)]]
        mid = statistics.median(medians)
        row[f"{phase}_ms"] = round(mid, 4)
        row[f"{phase}_rounds_ms"] = [round(x, 4) for x in medians]
        row[f"{phase}_spread"] = round((max(medians) - min(medians)) / mid, 4)
        # Contention from other processes only ever slows a run down: the fastest round is the
        # closest to the device running this model alone.
        row[f"{phase}_best_ms"] = round(min(medians), 4)
        row[f"{phase}_p10_rounds_ms"] = [round(m.p10_ms, 4) for m in samples[(point.id, phase)]]
    decode = samples[(point.id, "decode")]
    row["memory_mb"] = round(statistics.median(m.steady_mb for m in decode), 2)
    row["peak_memory_mb"] = round(statistics.median(m.peak_mb for m in decode), 2)
    row["runtime"] = hardware.runtime
    row["moe_kernel"] = moe_kernel_of(hardware.runtime)
    row["decode_form"] = decode_form_of(hardware.runtime)
    row["runtime_version"] = decode[0].version
    if hardware.runtime == "onnxruntime":
        row["ort_version"] = decode[0].version  # the key rows had before runtimes were chosen
    row["affinity"] = decode[0].affinity
    return row


def write_rows(rows: Iterable[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
