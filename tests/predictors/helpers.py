"""Hardware profiles and measured-like rows shared by the predictor tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.config.compose import load_settings
from nas.hardware import HardwareProfile
from predictors.calibrated import QUANTITIES
from predictors.features import features


def profile(name: str = "local_cpu") -> HardwareProfile:
    cfg = load_settings([f"hardware={name}", "budget=smoke"])
    return cfg.hardware


def varied_candidates(n: int, seed: int = 0) -> list[Candidate]:
    """Dense, grouped-query and MoE architectures at 16, 8 and 4 bits (groups of 32 and 128)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        heads = int(rng.choice([2, 4, 8]))
        experts = int(rng.choice([1, 1, 4]))
        arch = ArchConfig(
            n_layers=int(rng.choice([2, 4, 8])),
            n_heads=heads,
            n_kv_heads=int(rng.choice([k for k in (1, 2, heads) if heads % k == 0])),
            head_dim=int(rng.choice([32, 64])),
            ffn_dim=int(rng.choice([256, 512, 1024])),
            vocab_size=int(rng.choice([2048, 8192])),
            n_experts=experts,
            experts_per_token=1 if experts == 1 else 2,
            tie_embeddings=bool(i % 2),
        )
        bits = (16, 8, 4)[i % 3]
        group = (32, 128)[(i // 3) % 2]  # both group sizes: prefill's per-block term is fitted
        out.append(Candidate(arch, CompressionConfig(bits, 0 if bits == 16 else group)))
    return out


def rows_from(
    coef: dict[str, np.ndarray],
    candidates: list[Candidate],
    hardware: HardwareProfile,
    cache_mb: float = math.inf,
) -> list[dict[str, Any]]:
    """Rows as a device would report them if it followed the model with coefficients `coef` (and
    decode reads beyond `cache_mb` cost the spill coefficient)."""
    rows = []
    for i, c in enumerate(candidates):
        x = features(c, hardware, cache_mb)
        rows.append(
            {
                "id": f"p{i}",
                "split": "fit" if i % 2 == 0 else "heldout",
                "arch": c.arch.to_dict(),
                "compression": c.compression.to_dict(),
                "threads": 2,
                "ort_version": "test",
                **{q: float(x[q] @ coef[q]) for q in QUANTITIES},
            }
        )
    return rows


TRUE_COEF = {
    "decode_ms": np.array([0.2, 0.05, 0.004, 0.002, 0.0015, 0.006, 0.001, 0.003, 0.0]),
    "prefill_ms": np.array([0.5, 0.1, 0.03, 0.02, 0.025, 0.05, 0.01, 0.002, 0.004]),
    "memory_mb": np.array([30.0, 1.1, 1.3, 1.6, 2.0]),
}
