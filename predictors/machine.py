"""Which machine a calibration "measured here" was timed on.

Cloud VMs and laptops share CPU names ("AMD EPYC") across generations that time the same graph
2-3x apart (BENCHMARKS.md, issue 15), so the name alone cannot tell whether a calibration still
describes this machine: the fingerprint adds the CPU's family, model and stepping, the number of
CPUs and the last-level cache.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


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


def this_machine() -> str:
    """E.g. "AMD EPYC, family 26 model 2 stepping 1, 2 CPUs, cache 32768K"."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    parts = [name]
    if "cpu family" in info:
        ids = ("cpu family", "model", "stepping")
        parts.append(" ".join(f"{k.split()[-1]} {info.get(k, '?')}" for k in ids))
    parts.append(f"{os.cpu_count()} CPUs")
    if cache := _last_level_cache():
        parts.append(f"cache {cache}")
    return ", ".join(parts)
