"""`python -m nas.calibrate`'s own settings, read before anything heavy is imported (torch, ONNX
Runtime), so that `--help` and argument errors answer at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from nas.cli import split_own
from nas.config.compose import load_settings
from nas.config.rules import at_least, one_of
from nas.hardware import HardwareProfile


@dataclass
class CalibrateArgs:
    """The command's own settings; other `KEY=VALUE`s choose the hardware profile."""

    mode: str = field(default="measure", metadata=one_of("measure", "bundle", "ingest"))
    out: str = ""  # mode=bundle: the folder to copy to the device
    results: str = ""  # mode=ingest: the device's results.jsonl
    manifest: str = ""  # mode=ingest: default next to results
    rounds: int = field(default=3, metadata=at_least(1))
    n_fit: int = field(default=20, metadata=at_least(1))
    n_heldout: int = field(default=30, metadata=at_least(0))
    seed: int = field(default=0, metadata=at_least(0))
    threads: int | None = field(default=None, metadata=at_least(1))  # None: the profile's
    reuse: bool = True  # use measurements already in runs/calibration/<H>/measurements.jsonl
    calibration: str = ""  # where the fit is written (default predictors/calibrations/<H>.json)
    runs_dir: str = "runs"
    target: str = field(default="p10", metadata=one_of("p10", "best", "median"))
    # A machine that is not quiet (load, steal time) before measuring: refuse, or measure and
    # flag it (each round's noise is recorded in the measurements either way).
    quiet: str = field(default="flag", metadata=one_of("refuse", "flag"))

    def threads_for(self, hardware: HardwareProfile) -> int:
        return self.threads or hardware.threads


def parse_args(argv: list[str]) -> tuple[CalibrateArgs, HardwareProfile]:
    """This command's own settings, and the hardware profile the other overrides choose."""
    args, hydra = split_own(argv, CalibrateArgs)
    return args, load_settings([*hydra, "budget=smoke"]).hardware
