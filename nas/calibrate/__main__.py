"""`python -m nas.calibrate hardware=H [runtime=executorch]`: measure a device in a runtime (ONNX
Runtime by default, ExecuTorch's XNNPACK delegate with runtime=executorch) and fit its predictor;
the fit goes to predictors/calibrations/<H>.json (<H>.executorch.json for ExecuTorch).

Modes:
  mode=measure (default)   export the calibration set, time it here (decode at the profile's
                           context and at 4x it, prefill; separate fresh processes, `rounds`
                           interleaved rounds), fit on the `fit` split,
                           score the held-out split, write predictors/calibrations/<H>.json
  mode=bundle out=DIR      for a device you cannot reach from here: DIR gets the models (decode,
                           prefill, decode at the long context), a manifest, the runner (`python
                           run_bundle.py` on the device; ONNX Runtime needs only numpy +
                           onnxruntime, ExecuTorch slm-nas[executorch]) and the lines for adb
                           (`onnxruntime_perf_test`, or ExecuTorch's `executor_runner`)
  mode=ingest results=FILE validate a device's results.jsonl against the bundle's manifest (next
                           to FILE, or manifest=PATH) and fit as mode=measure does
Other keys: rounds=3 n_fit=20 n_heldout=30 seed=0 threads=<profile's> reuse=true (use measurements
already in runs/calibration/<H>/measurements.jsonl) calibration=PATH (where the fit is written)
target=p10|best|median (fit each graph's fastest round by its 10th-percentile run, the default,
or by its median run, or the median over rounds: on a shared machine other processes only ever
slow a run down, so the fastest runs are the closest to the device running the model alone).
"""

from __future__ import annotations

from pathlib import Path

from nas.cli import wants_help
from nas.errors import run_cli


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(__doc__)
        return 0
    from nas.calibrate.args import parse_args

    args, hardware = parse_args(argv)  # before torch and ONNX Runtime load: errors answer at once
    from nas.cli import configure_logging

    configure_logging()  # the quiet check's warnings shown, libraries' import notices not
    from nas.calibrate.fit import summary, write_calibration
    from nas.calibrate.run import run_bundle, run_ingest, run_measure
    from predictors.calibrated import calibration_path

    if args.mode == "bundle":
        out = run_bundle(args, hardware)
        print(f"wrote the bundle to {out}: copy it to the device and run `python run_bundle.py`")
        return 0
    calibration = (
        run_measure(args, hardware) if args.mode == "measure" else run_ingest(args, hardware)
    )
    path = Path(args.calibration or calibration_path(hardware.name, runtime=hardware.runtime))
    write_calibration(calibration, path)
    print(summary(calibration))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
