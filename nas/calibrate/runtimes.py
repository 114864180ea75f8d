"""What calibrating a device needs from a runtime: its model files for a calibration point, and
timing one of them in a fresh process. One class per runtime; `tests/calibrate/test_runtimes.py`
is the contract every one passes.

- `OnnxRuntime`: the graphs of `nas.onnx.export` (one float export per architecture, quantized
  copies next to it), timed by `nas.onnx.measure`;
- `ExecuTorch`: the programs of `nas.executorch.export` (XNNPACK delegate, torchao's formats),
  one per candidate and phase since quantization happens before lowering, timed by
  `nas.executorch.measure`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nas.arch import Candidate
from nas.errors import NasError
from nas.hardware import MOE_KERNELS, RUNTIMES, HardwareProfile

PHASES = ("decode", "prefill")


@dataclass(frozen=True)
class Timing:
    """What a calibration row keeps of one timed model file."""

    median_ms: float
    p10_ms: float
    steady_mb: float
    peak_mb: float
    affinity: list[int]
    version: str  # the runtime's version


class CalibrationRuntime(ABC):
    """Exports calibration points and times their files in one runtime."""

    name: ClassVar[str]
    suffix: ClassVar[str]  # the model files' extension

    def require(self) -> None:  # noqa: B027 - a runtime that is always installed needs nothing
        """Raise `NasError` (one line saying how to install it) when the runtime is missing."""

    @abstractmethod
    def export(
        self,
        candidate: Candidate,
        hardware: HardwareProfile,
        cache_dir: Path,
        phases: tuple[str, ...] = PHASES,
    ) -> dict[str, Path]:
        """The model file of each phase at the profile's context and prompt (cached)."""

    @abstractmethod
    def time(
        self, path: Path, *, threads: int, warmup: int, runs: int, max_seconds: float
    ) -> Timing:
        """Time `path` in a fresh process (its memory is then the model's alone)."""


class OnnxRuntime(CalibrationRuntime):
    name = "onnxruntime"
    suffix = ".onnx"

    def export(self, candidate, hardware, cache_dir, phases=PHASES):
        from nas.onnx.export import export_candidate

        deploy = hardware.deploy
        # one float export per architecture and conditions serves every compression
        arch_key = Candidate(candidate.arch).key(deploy.context_len, deploy.prompt_len)
        exported = export_candidate(
            candidate,
            cache_dir / arch_key,
            context_len=deploy.context_len,
            prompt_len=deploy.prompt_len,
            processor=hardware.processor,
            int8_activations=hardware.int8_activations,
            phases=phases,
        )
        return {phase: getattr(exported, phase) for phase in phases}

    def time(self, path, *, threads, warmup, runs, max_seconds):
        from nas.onnx.measure import measure_isolated

        m = measure_isolated(
            path, threads=threads, warmup=warmup, runs=runs, max_seconds=max_seconds
        )
        return Timing(m.median_ms, m.p10_ms, m.steady_mb, m.peak_mb, m.affinity, m.ort_version)


class ExecuTorch(CalibrationRuntime):
    name = "executorch"
    suffix = ".pte"

    def require(self) -> None:
        from nas.executorch.runtime import require

        require()

    def export(self, candidate, hardware, cache_dir, phases=PHASES):
        from nas.executorch.export import DECODE_FORM, export_pte, timing_position
        from nas.executorch.quantize import check_format

        deploy, comp = hardware.deploy, candidate.compression
        group = check_format(comp.weight_bits, comp.group_size or None)
        folder = cache_dir / candidate.key(deploy.context_len, deploy.prompt_len)
        out = {}
        for phase in phases:
            # named by its kernels and cache form: never a program of an older form
            path = folder / f"{phase}-{MOE_KERNELS[self.name]}-{DECODE_FORM}.pte"
            if not path.is_file():  # written whole or not at all: a file here is complete
                decode = phase == "decode"
                length = deploy.context_len if decode else deploy.prompt_len
                export_pte(
                    candidate.arch,
                    path,
                    weight_bits=comp.weight_bits,
                    group_size=group,
                    context_len=length,
                    phase=phase,  # type: ignore[arg-type]
                    # the C++ runner on a phone feeds ones: the step's position is fixed here
                    position=timing_position(length) if decode else None,
                )
            out[phase] = path
        return out

    def time(self, path, *, threads, warmup, runs, max_seconds):
        from nas.executorch.measure import measure_isolated

        m = measure_isolated(
            path, threads=threads, warmup=warmup, runs=runs, max_seconds=max_seconds
        )
        return Timing(
            m.median_ms, m.p10_ms, m.steady_mb, m.peak_mb, m.affinity, m.executorch_version
        )


BY_NAME: dict[str, type[CalibrationRuntime]] = {r.name: r for r in (OnnxRuntime, ExecuTorch)}
assert set(BY_NAME) == set(RUNTIMES), "every runtime of the runtime group can be calibrated"


def calibration_runtime(name: str) -> CalibrationRuntime:
    """The runtime `name` (one of `nas.hardware.RUNTIMES`), checked to be installed."""
    if name not in BY_NAME:
        raise NasError(f"unknown runtime '{name}'; use one of {', '.join(BY_NAME)}")
    runtime = BY_NAME[name]()
    runtime.require()
    return runtime


def version_key(row: dict[str, Any]) -> str:
    """The runtime version a measurement row records (rows from before runtimes: ort_version)."""
    return str(row.get("runtime_version", row.get("ort_version", "?")))
