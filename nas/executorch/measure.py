"""Time an ExecuTorch program (`.pte`) and measure the memory it takes, as `nas.onnx.measure`
does for ONNX Runtime.

`measure_isolated(path, threads=2)` runs the measurement in a fresh Python process, so that the
process's peak resident memory belongs to this one program; `measure_program` runs it in the
current process (timing only is then trustworthy: XNNPACK's thread pool is process-wide, and
other programs loaded here share it). Both return a `Measurement`: median, p10, p90 and mean of
many timed runs after warm-up, the thread count, the CPU affinity, and memory.

Memory: `baseline_mb` is the process after importing torch and ExecuTorch (an interpreter a
device does not need: on a phone the C++ runner loads the `.pte`); `steady_mb` is the resident
memory after the timed runs minus the baseline (the program's weights and planned buffers, the
inputs and outputs); `peak_mb` is the high-water mark minus the baseline.

`python -m nas.executorch.measure MODEL.pte threads=2 runs=100` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.onnx.measure import _peak_rss_mb, _rss_mb, run_child, timed_runs

MODULE = "nas.executorch.measure"


@dataclass(frozen=True)
class Measurement:
    """Latency of one program (milliseconds per run) and the memory it takes (MiB)."""

    model: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    warmup: int
    threads: int
    affinity: list[int]
    baseline_mb: float
    steady_mb: float
    peak_mb: float
    load_s: float
    executorch_version: str
    delegate: str = "xnnpack"
    times_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, *, with_times: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_times:
            data.pop("times_ms")
        return data

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the run-to-run spread within this invocation."""
        return (self.p90_ms - self.p10_ms) / self.median_ms


def feeds(specs: list[tuple[tuple[int, ...], Any]], seed: int = 0, position: int = 0) -> list[Any]:
    """Inputs for every program input: token ids 0, random floats, and for a decode program
    (`input_ids` [1,1], `position_ids` [1,1]) the cache position `position`. A timing program
    fixes its position when exported (`nas.executorch.export.timing_position`) and ignores it."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    decode = [shape for shape, _ in specs] == [(1, 1), (1, 1)]
    out = []
    for i, (shape, dtype) in enumerate(specs):
        if dtype == torch.long:
            out.append(torch.full(shape, position if decode and i == 1 else 0, dtype=dtype))
        else:
            out.append(torch.randn(shape, generator=gen).to(dtype))
    return out


def measure_program(
    path: str | Path,
    *,
    threads: int,
    warmup: int = 5,
    runs: int = 50,
    max_seconds: float = 30.0,
    position: int = 0,
) -> Measurement:
    """Time `runs` runs of the program at `path` after `warmup` untimed ones, in this process.

    Stops early (keeping at least 5 timed runs) once `max_seconds` of timed runs have passed.
    A deployable decode program (`model.pte`) steps at `position` of its cache.
    """
    import numpy as np

    from nas.executorch.runtime import load_custom_ops, load_method, thread_count, version

    executorch_version = version()  # imports ExecuTorch before the baseline is read
    load_custom_ops()  # and the LLM ops library a decode program needs
    baseline = _rss_mb()
    started = time.perf_counter()
    program = load_method(path, threads=threads)
    load_s = time.perf_counter() - started
    inputs = feeds(program.input_specs(), position=position)
    times = timed_runs(lambda: program.run(inputs), warmup, runs, max_seconds)
    steady = _rss_mb()
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return Measurement(
        model=str(path),
        median_ms=float(p50),
        p10_ms=float(p10),
        p90_ms=float(p90),
        mean_ms=float(np.mean(times)),
        runs=len(times),
        warmup=warmup,
        threads=thread_count(),
        affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
        baseline_mb=round(baseline, 2),
        steady_mb=round(steady - baseline, 2),
        peak_mb=round(_peak_rss_mb() - baseline, 2),
        load_s=round(load_s, 4),
        executorch_version=executorch_version,
        times_ms=[round(t, 4) for t in times],
    )


def measure_isolated(
    path: str | Path,
    *,
    threads: int,
    warmup: int = 5,
    runs: int = 50,
    max_seconds: float = 30.0,
    cpus: list[int] | None = None,
    timeout_s: float = 600.0,
) -> Measurement:
    """`measure_program` in a fresh Python process (pinned to `cpus` when given).

    Raises:
        NasError: ExecuTorch is not installed (checked here, before the child starts).
        RuntimeError: the child failed (its last stderr line says why).
    """
    from nas.executorch.runtime import require

    require()
    command = [sys.executable, "-m", MODULE]
    return Measurement(
        **run_child(command, path, threads, warmup, runs, max_seconds, cpus, timeout_s)
    )


def main(argv: list[str]) -> int:
    """`python -m nas.executorch.measure MODEL.pte [threads=N] [warmup=N] [runs=N]
    [max_seconds=S] [cpus=0,1] [position=N]`: one JSON line (`position`: where a deployable
    decode program steps in its cache; a timing program fixed its own when exported)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    path, options = argv[0], dict(a.split("=", 1) for a in argv[1:])
    if not Path(path).is_file():
        print(f"error: no program file {path}", file=sys.stderr)
        return 2
    if "cpus" in options:  # pin before ExecuTorch creates its thread pool
        os.sched_setaffinity(0, {int(c) for c in options["cpus"].split(",")})
    from nas.errors import NasError

    try:
        result = measure_program(
            path,
            threads=int(options.get("threads", os.cpu_count() or 1)),
            warmup=int(options.get("warmup", 5)),
            runs=int(options.get("runs", 50)),
            max_seconds=float(options.get("max_seconds", 30.0)),
            position=int(options.get("position", 0)),
        )
    except NasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(with_times=options.get("times") == "true")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
