"""Energy per generated token: an estimate from bytes moved and arithmetic, not a measurement.

    energy_mj = (bytes read per token * pJ/byte + FLOPs per token * pJ/FLOP) * 1e-9

A batch-1 decode step reads every active weight and the KV cache once and does ~2 FLOPs per
weight (RooflineLatency's decode terms). The per-unit energies are the hardware file's `energy`
block (`pj_per_byte`, `pj_per_flop`, with their `source`): generic published figures, not device
measurements. Static power is left out, so this is a lower bound on the energy a device draws per
token; it ranks candidates, it does not replace a power meter.
"""

from __future__ import annotations

from nas.arch import Candidate
from nas.hardware import HardwareProfile
from predictors.footprint import float_bytes, kv_cache_bytes, linear_weights


def decode_energy_mj(candidate: Candidate, hardware: HardwareProfile) -> float:
    """Estimated millijoules per decoded token at the device's context (see module doc)."""
    arch = candidate.arch
    active = linear_weights(candidate, hardware.runtime, arch.experts_per_token)
    head = arch.vocab_size * arch.d_model
    width = float_bytes(hardware)
    nbytes = (
        active.nbytes(candidate.compression, hardware, width)
        + head * width
        + kv_cache_bytes(arch, hardware.deploy.context_len, width)
    )
    flops = 2.0 * (active.compressed + active.left_float + head)
    pj = nbytes * hardware.energy.pj_per_byte + flops * hardware.energy.pj_per_flop
    return pj * 1e-9
