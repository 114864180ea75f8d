"""A target device as the predictors see it, read from `hydra_configs/hardware/<name>.yaml`.

Every number about a device lives in its YAML file next to its source; this module only gives the
numbers types and names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nas.errors import NasError


@dataclass(frozen=True)
class RooflinePrior:
    """Free parameters of the latency model, before calibration on real measurements."""

    bandwidth_efficiency: float
    compute_efficiency: float
    per_token_ms: float
    per_layer_ms: float
    runtime_overhead_mb: float
    rel_spread: float


@dataclass(frozen=True)
class DeployBudget:
    """What the model may cost on the device, and the conditions latency is quoted at."""

    max_memory_mb: float
    context_len: int
    prompt_len: int
    min_tokens_per_s: float

    @property
    def max_decode_ms(self) -> float:
        return 1000.0 / self.min_tokens_per_s


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    processor: str  # cpu | gpu
    threads: int
    peak_gflops: dict[str, float]  # by compute dtype: fp32, fp16, int8
    memory_gb: float
    bandwidth_gbs: float
    prior: RooflinePrior
    deploy: DeployBudget
    sources: dict[str, str] = field(default_factory=dict)
    sparse_kernels: tuple[str, ...] = ()  # sparsity patterns with speed-up kernels here
    sparse_storage: tuple[str, ...] = ()  # sparsity patterns stored compressed here

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> HardwareProfile:
        try:
            return cls(
                name=cfg["name"],
                description=cfg["description"],
                processor=cfg["processor"],
                threads=int(cfg["threads"]),
                peak_gflops={k: float(v) for k, v in cfg["peak_gflops"].items()},
                memory_gb=float(cfg["memory_gb"]),
                bandwidth_gbs=float(cfg["bandwidth_gbs"]),
                prior=RooflinePrior(**cfg["prior"]),
                deploy=DeployBudget(**cfg["deploy"]),
                sources=dict(cfg.get("sources", {})),
                sparse_kernels=tuple(cfg.get("sparse_kernels", ())),
                sparse_storage=tuple(cfg.get("sparse_storage", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            name = cfg.get("name", "?") if isinstance(cfg, dict) else "?"
            raise NasError(f"hardware profile '{name}' is malformed: {err}") from None
