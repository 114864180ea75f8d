"""On-device runner of a calibration bundle: `python run_bundle.py [threads=N] [rounds=N]`.

Copied into the bundle by `nas.calibrate mode=bundle` next to `manifest.json`. An ONNX Runtime
bundle also holds `measure.py` and needs only Python 3.9+, numpy and onnxruntime on the device; an
ExecuTorch bundle needs `pip install slm-nas[executorch]` there (its measuring module, which
brings ExecuTorch's Python runtime), or ExecuTorch's C++ runner (`executor_runner.sh`) on phones
without Python. Every model file is timed in a fresh
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


MEASURE = {  # the measuring child of each runtime: prints one JSON line
    "onnxruntime": [sys.executable, str(HERE / "measure.py")],
    "executorch": [sys.executable, "-m", "nas.executorch.measure"],
}


def measure(runtime, path, threads, runs):
    args = [*MEASURE[runtime], str(HERE / path), f"threads={threads}"]
    out = subprocess.run([*args, f"runs={runs}"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    options = dict(a.split("=", 1) for a in argv)
    manifest = json.loads((HERE / "manifest.json").read_text())
    threads = int(options.get("threads", manifest["threads"]))
    rounds = int(options.get("rounds", manifest["rounds"]))
    runtime = manifest.get("runtime", "onnxruntime")
    samples = {}
    rng = random.Random(0)
    for r in range(rounds):
        order = list(manifest["points"])
        rng.shuffle(order)
        for point in order:
            for phase, name in point["files"].items():
                runs = 12 if phase == "prefill" else 40  # calibration_set.RUNS: standalone here
                result = measure(runtime, name, threads, runs)
                samples.setdefault((point["id"], phase), []).append(result)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    out = HERE / options.get("out", "results.jsonl")
    with out.open("w") as handle:
        for point in manifest["points"]:
            decode = samples[(point["id"], "decode")]
            row = {"id": point["id"], "device": manifest["device"], "runtime": runtime}
            for phase in point["files"]:
                medians = [m["median_ms"] for m in samples[(point["id"], phase)]]
                row[phase + "_ms"] = statistics.median(medians)
                row[phase + "_rounds_ms"] = medians
            if "decode_long" in point["files"]:
                row["long_context_len"] = manifest["long_context_len"]
            row.update(
                memory_mb=statistics.median(m["steady_mb"] for m in decode),
                threads=threads,
                runtime_version=decode[0].get("ort_version", decode[0].get("executorch_version")),
                cpu_model=cpu_model(),
                date=datetime.date.today().isoformat(),
            )
            handle.write(json.dumps(row) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
