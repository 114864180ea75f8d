"""`python -m nas.calibrate`: measure a device with ONNX Runtime and fit its predictor (a command).

- `__main__`: the command line; `run`: the modes (measure, bundle, ingest), fitting and scoring;
- `calibration_set`: the architectures a device is measured on, and measuring them;
- `bundle_runner`: the on-device runner copied into a bundle (imports nothing from the project).
"""
