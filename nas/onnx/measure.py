"""Time an ONNX model with ONNX Runtime and measure the memory its session takes.

`measure_isolated(path, threads=2)` runs the measurement in a fresh Python process, so that the
process's peak resident memory belongs to this one session; `measure_session` runs it in the
current process (timing only is then trustworthy). Both return a `Measurement`: median, p10, p90
and mean of many timed runs after warm-up, the thread count, the CPU affinity, and memory.

Memory: `baseline_mb` is the process after importing numpy and onnxruntime (an interpreter a device
does not need); `steady_mb` is the resident memory after the timed runs minus the baseline (weights
as the session holds them, its arena, the KV-cache inputs and outputs); `peak_mb` is the high-water
mark minus the baseline (it includes the transient copy made while loading the model file).

This file imports nothing from the project (only numpy and onnxruntime), so the on-device bundle
of `nas.calibrate mode=bundle` ships it unchanged as its runner: `python measure.py MODEL.onnx
threads=4 runs=100` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class Measurement:
    """Latency of one graph (milliseconds per run) and the memory of its session (MiB)."""

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
    ort_version: str
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


def _rss_mb() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def _peak_rss_mb() -> float:
    """High-water resident memory of this process image (VmHWM; ru_maxrss would carry over the
    parent's peak across fork + exec)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (MB if sys.platform == "darwin" else 1024.0)


def random_feeds(session: Any, seed: int = 0) -> dict[str, Any]:
    """Inputs for every graph input: token ids 0, positions after the cache, random floats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    past_len = 0
    for arg in session.get_inputs():
        if arg.name.startswith("past_") and isinstance(arg.shape[2], int):
            past_len = arg.shape[2]
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        if arg.type == "tensor(int64)":
            fill = past_len if arg.name == "position_ids" else 0
            feeds[arg.name] = np.full(shape, fill, dtype=np.int64)
        elif arg.type in dtypes:
            feeds[arg.name] = rng.standard_normal(shape).astype(dtypes[arg.type])
        else:
            raise ValueError(f"input {arg.name} has unsupported type {arg.type}")
    return feeds


def timed_runs(run: Callable[[], Any], warmup: int, runs: int, max_seconds: float) -> list[float]:
    """Milliseconds of `runs` calls of `run` after `warmup` untimed ones; stops early (keeping at
    least 5 timed runs) once `max_seconds` of timed runs have passed. Shared by every runtime."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(runs):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1e6)
        if len(times) >= 5 and time.perf_counter() > deadline:
            break
    return times


def measure_session(
    path: str | Path,
    *,
    threads: int,
    warmup: int = 5,
    runs: int = 50,
    max_seconds: float = 30.0,
) -> Measurement:
    """Time `runs` runs of the model at `path` after `warmup` untimed ones, in this process.

    Stops early (keeping at least 5 timed runs) once `max_seconds` of timed runs have passed.
    """
    import numpy as np
    import onnxruntime as ort

    baseline = _rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - started
    feeds = random_feeds(session)
    times = timed_runs(lambda: session.run(None, feeds), warmup, runs, max_seconds)
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
        threads=threads,
        affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
        baseline_mb=round(baseline, 2),
        steady_mb=round(steady - baseline, 2),
        peak_mb=round(_peak_rss_mb() - baseline, 2),
        load_s=round(load_s, 4),
        ort_version=ort.__version__,
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
    """`measure_session` in a fresh Python process (pinned to `cpus` when given).

    Raises:
        RuntimeError: the child failed (its last stderr line says why).
    """
    command = [sys.executable, str(Path(__file__).resolve())]
    return Measurement(
        **run_child(command, path, threads, warmup, runs, max_seconds, cpus, timeout_s)
    )


def run_child(
    command: list[str],
    path: str | Path,
    threads: int,
    warmup: int,
    runs: int,
    max_seconds: float,
    cpus: list[int] | None,
    timeout_s: float,
) -> dict[str, Any]:
    """The JSON line a measuring child (`command MODEL KEY=VALUE ...`, a runtime's `main`)
    prints, as a mapping. Raises RuntimeError with the child's last stderr line if it fails."""
    args = [
        *command,
        str(path),
        f"threads={threads}",
        f"warmup={warmup}",
        f"runs={runs}",
        f"max_seconds={max_seconds}",
        "times=true",
    ]
    if cpus:
        args.append("cpus=" + ",".join(str(c) for c in cpus))
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {path} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    """`python measure.py MODEL.onnx [threads=N] [warmup=N] [runs=N] [max_seconds=S] [cpus=0,1]`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    path, options = argv[0], dict(a.split("=", 1) for a in argv[1:])
    if not Path(path).is_file():
        print(f"error: no model file {path}", file=sys.stderr)
        return 2
    if "cpus" in options:  # pin before onnxruntime creates its thread pool
        os.sched_setaffinity(0, {int(c) for c in options["cpus"].split(",")})
    result = measure_session(
        path,
        threads=int(options.get("threads", os.cpu_count() or 1)),
        warmup=int(options.get("warmup", 5)),
        runs=int(options.get("runs", 50)),
        max_seconds=float(options.get("max_seconds", 30.0)),
    )
    print(json.dumps(result.to_dict(with_times=options.get("times") == "true")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
