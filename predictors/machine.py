"""Which machine a calibration "measured here" was timed on.

Cloud VMs and laptops share CPU names ("AMD EPYC") across generations that time the same graph
2-3x apart (BENCHMARKS.md, issue 15), so the name alone cannot tell whether a calibration still
describes this machine: the fingerprint adds the CPU's family, model and stepping, the number of
CPUs and the last-level cache.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends here
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _last_level_cache() -> str:
    caches = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"))
    try:
        return caches[-1].read_text().strip() if caches else ""
    except OSError:
        return ""


def cpu_model(info: Mapping[str, str] | None = None) -> str:
    """The CPU's name, e.g. "AMD EPYC" (`info`: /proc/cpuinfo's fields, read when not given)."""
    info = _cpuinfo() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


def this_machine() -> str:
    """E.g. "AMD EPYC, family 26 model 2 stepping 1, 2 CPUs, cache 32768K"."""
    info = _cpuinfo()
    parts = [cpu_model(info)]
    if "cpu family" in info:
        ids = ("cpu family", "model", "stepping")
        parts.append(" ".join(f"{k.split()[-1]} {info.get(k, '?')}" for k in ids))
    parts.append(f"{os.cpu_count()} CPUs")
    if cache := _last_level_cache():
        parts.append(f"cache {cache}")
    return ", ".join(parts)


def calibrated_elsewhere(provenance: Mapping[str, Any], hardware_name: str) -> str | None:
    """A warning when a calibration "measured here" was timed on another machine than this one,
    or does not say which; None for the same machine, and for a device's bundle (another machine
    by design)."""
    if not str(provenance.get("device", "")).endswith("(measured here)"):
        return None
    here, fix = this_machine(), f"python -m nas.calibrate hardware={hardware_name}"
    if "machine" not in provenance:  # calibrations from before machines were recorded
        return (
            f"the {hardware_name} calibration does not record which machine it was measured on "
            f"({provenance.get('cpu_model', '?')}, {provenance.get('date', '?')}); if not this "
            f"one ({here}), its prices may be 2-3x off: re-run {fix} here"
        )
    if provenance["machine"] == here:
        return None
    return (
        f"the {hardware_name} calibration was measured on another machine "
        f"({provenance['machine']}; this one: {here}), and VMs of one CPU name have timed the "
        f"same graphs 2-3x apart: re-run {fix} here for prices of this machine"
    )
