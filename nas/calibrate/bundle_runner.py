"""On-device runner of a calibration bundle: `python run_bundle.py [threads=N] [rounds=N]`.

Copied into the bundle by `nas.calibrate mode=bundle` next to `measure.py` and `manifest.json`;
needs only Python 3.9+, numpy and onnxruntime on the device. Every graph is timed in a fresh
process, the models interleaved in a new order each round; writes results.jsonl (one row per
model id) for `python -m nas.calibrate hardware=<device> mode=ingest results=results.jsonl`.
"""

import datetime
import json
import platform
import random
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(path, threads, runs):
    args = [sys.executable, str(HERE / "measure.py"), str(HERE / path), f"threads={threads}"]
    out = subprocess.run([*args, f"runs={runs}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    options = dict(a.split("=", 1) for a in argv)
    manifest = json.loads((HERE / "manifest.json").read_text())
    threads = int(options.get("threads", manifest["threads"]))
    rounds = int(options.get("rounds", manifest["rounds"]))
    samples = {}
    rng = random.Random(0)
    for r in range(rounds):
        order = list(manifest["points"])
        rng.shuffle(order)
        for point in order:
            for phase, runs in (("decode", 40), ("prefill", 12)):
                result = measure(point["files"][phase], threads, runs)
                samples.setdefault((point["id"], phase), []).append(result)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    out = HERE / options.get("out", "results.jsonl")
    with out.open("w") as handle:
        for point in manifest["points"]:
            decode = samples[(point["id"], "decode")]
            prefill = samples[(point["id"], "prefill")]
            row = {
                "id": point["id"],
                "device": manifest["device"],
                "decode_ms": statistics.median(m["median_ms"] for m in decode),
                "prefill_ms": statistics.median(m["median_ms"] for m in prefill),
                "memory_mb": statistics.median(m["steady_mb"] for m in decode),
                "decode_rounds_ms": [m["median_ms"] for m in decode],
                "prefill_rounds_ms": [m["median_ms"] for m in prefill],
                "threads": threads,
                "ort_version": decode[0]["ort_version"],
                "cpu_model": cpu_model(),
                "date": datetime.date.today().isoformat(),
            }
            handle.write(json.dumps(row) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
