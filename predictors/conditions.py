"""What a calibration records about how its graphs were timed, and the refusal to use one timed
otherwise: the runtime, how int8/int4 layers compute, the expert kernel and how decode holds the
KV cache. Rows, bundles and calibrations carry these, so measurements taken under different
conditions are never fitted or priced together."""

from __future__ import annotations

from typing import Any

from nas.errors import NasError
from nas.hardware import DECODE_FORM_BEFORE, DECODE_FORMS, MOE_KERNELS, HardwareProfile


def activations_of(hardware: HardwareProfile) -> str:
    """How the device's runtime computes int8/int4 layers: "int8" (activations quantized on the
    fly, ONNX Runtime's fast CPU kernels) or "float" (weights dequantized)."""
    return "int8" if hardware.int8_activations else "float"


def moe_kernel_of(runtime: str) -> str:
    """The expert kernel a runtime's graphs hold, recorded with every measurement so that rows
    timed on another kernel are never fitted together with these."""
    return MOE_KERNELS[runtime]


def decode_form_of(runtime: str) -> str:
    """How a runtime's decode step holds its KV cache (`nas.hardware.DECODE_FORMS`), recorded
    with every measurement so that rows of another form are never fitted together with these."""
    return DECODE_FORMS[runtime]


def runtime_of(calibration: dict[str, Any]) -> str:
    """The runtime a calibration was measured in (files from before runtimes: ONNX Runtime)."""
    return str(calibration.get("conditions", {}).get("runtime", "onnxruntime"))


def check_conditions(calibration: dict[str, Any], hardware: HardwareProfile) -> None:
    """Raise `NasError`, saying what to re-run, unless `calibration` was timed as `hardware`'s
    runtime runs its graphs now."""
    if runtime_of(calibration) != hardware.runtime:
        raise NasError(
            f"the calibration of {hardware.name} was measured in {runtime_of(calibration)}, "
            f"not {hardware.runtime}; re-run python -m nas.calibrate "
            f"hardware={hardware.name} runtime={hardware.runtime}"
        )
    form = calibration.get("conditions", {}).get("decode_form", DECODE_FORM_BEFORE)
    if form != decode_form_of(hardware.runtime):
        raise NasError(
            f"the calibration of {hardware.name} timed decode with the KV cache as "
            f"{form}, but this version's {hardware.runtime} programs hold it as "
            f"{decode_form_of(hardware.runtime)}; re-run python -m nas.calibrate "
            f"hardware={hardware.name} runtime={hardware.runtime}"
        )
    measured = calibration.get("conditions", {}).get("activations", "float")
    if measured != activations_of(hardware):
        raise NasError(
            f"the calibration of {hardware.name} timed int8/int4 graphs with {measured} "
            f"activations, but this device's runtime runs them with "
            f"{activations_of(hardware)} ones; re-run python -m nas.calibrate "
            f"hardware={hardware.name}"
        )
