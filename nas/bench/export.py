"""Export a study's whole Pareto front and load every member in a fresh `transformers` process.

    python -m nas.bench export study.name=S [runs_dir=runs] [out=DIR]

Every member is exported (`trial=pareto`, without ONNX) to `out` (default
`<runs_dir>/<study>/export/pareto`, replaced); then a separate Python process that imports only
`transformers` builds each with `AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DIR))`
and compares its parameter count with `metrics.params` in pareto.json, and round-trips text
through `AutoTokenizer.from_pretrained(DIR)`. Exit code 1 if any member disagrees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from nas.cli import split_own
from nas.export.run import ExportArgs, run_export
from nas.study.lookup import resolve

TEXT = "import os\nprint(os.getcwd())  # ✓ ünïcode\ttabs  and  spaces\n"
CHECK = """
import json, sys
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
text = sys.argv[1]
for d in sys.argv[2:]:
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))
    tok = AutoTokenizer.from_pretrained(d)
    print(json.dumps([d, type(model).__name__, sum(p.numel() for p in model.parameters()),
                      tok.decode(tok(text)["input_ids"]) == text]))
"""


def main(argv: list[str]) -> int:
    own = [a for a in argv if a.split("=", 1)[0] in ("trial", "force", "onnx")]
    if own:
        print(f"ignoring {own}: the bench exports trial=pareto without ONNX")
    rest = [a for a in argv if a not in own]
    started = time.perf_counter()
    exported = run_export([*rest, "trial=pareto", "onnx=false", "force=true"])
    seconds = time.perf_counter() - started
    args, overrides = split_own(rest, ExportArgs)
    (ref,) = resolve(overrides, args.studies)
    front = json.loads((ref.out_dir / "pareto.json").read_text())["pareto"]
    params = {e["trial"]: e["metrics"]["params"] for e in front}
    expected = {str(item.path): (item.trial, params.get(item.trial, -1)) for item in exported}
    run = subprocess.run(
        [sys.executable, "-c", CHECK, TEXT, *expected],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("[")]
    good = 0
    print(f"{'trial':>5}  {'class':<20} {'built':>11} {'pareto':>11}  round-trip")
    for path, cls, built, round_trip in rows:
        trial, params = expected[path]
        good += built == params and round_trip
        print(f"{trial:>5}  {cls:<20} {built:>11,} {params:>11,}  {round_trip}")
    print(f"{good}/{len(rows)} members match; export took {seconds:.1f} s")
    return 0 if good == len(rows) == len(expected) else 1
