"""Energy per generated token: an estimate from bytes moved and arithmetic, not a measurement.

    energy_mj = (bytes read per token * pJ/byte + FLOPs per token * pJ/FLOP) * 1e-9

A batch-1 decode step reads every active weight and the KV cache once and does ~2 FLOPs per
weight (RooflineLatency's decode terms). Per-unit energies are generic published figures, not
device measurements: DRAM access ~20 pJ/byte for LPDDR4X/LPDDR5 and DDR5 (DIMMs can cost up to
~3x more), ~10 pJ/byte for HBM (profiles with >= 1 TB/s); arithmetic ~1 pJ/FLOP on CPUs at
7-5 nm and ~0.5 pJ/FLOP on GPU tensor units (Horowitz, ISSCC 2014, 45 nm figures scaled to
modern nodes; O'Connor et al., MICRO 2017, for DRAM/HBM). Static power is left out, so this is a
lower bound on the energy a device draws per token; it ranks candidates, it does not replace a
power meter.
"""

from __future__ import annotations

from nas.arch import Candidate
from nas.hardware import HardwareProfile
from predictors.footprint import (
    FP16_BYTES,
    active_matmul_params,
    kv_cache_bytes,
    matmul_bytes_per_weight,
)

PJ_PER_BYTE = {"dram": 20.0, "hbm": 10.0}
PJ_PER_FLOP = {"cpu": 1.0, "gpu": 0.5}
HBM_BANDWIDTH_GBS = 1000.0  # only stacked memory reaches this


def memory_kind(hardware: HardwareProfile) -> str:
    return "hbm" if hardware.bandwidth_gbs >= HBM_BANDWIDTH_GBS else "dram"


def decode_energy_mj(candidate: Candidate, hardware: HardwareProfile) -> float:
    """Estimated millijoules per decoded token at the device's context (see module doc)."""
    arch = candidate.arch
    active = active_matmul_params(arch)
    head = arch.vocab_size * arch.d_model
    nbytes = (
        active * matmul_bytes_per_weight(candidate.compression, hardware)
        + head * FP16_BYTES
        + kv_cache_bytes(arch, hardware.deploy.context_len)
    )
    flops = 2.0 * (active + head)
    pj = nbytes * PJ_PER_BYTE[memory_kind(hardware)] + flops * PJ_PER_FLOP[hardware.processor]
    return pj * 1e-9
