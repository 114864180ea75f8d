"""Quality proxies: how a candidate's quality is scored, selected with `proxy=NAME`.

Every proxy returns a score where lower is better, the study's first objective. The proxy group's
`scorer._target_` names the class (`hydra_configs/proxy/*.yaml`):

- `train` — held-out bits per byte after the short proxy training run
  (`nas.quality.training.train_proxy`).
- `params` — training-free: minus log10 of the non-embedding parameter count, the proxy that
  LiteTransformerSearch (Javaheripi et al., 2022) found to rank GPT-2-family models well.
- `extrapolate` — the same short run, with held-out bits per byte also measured at checkpoints;
  a saturating power law `c + a * t^-alpha` is fitted to those points and read off at
  `horizon` x the proxy's steps, so that models which are still learning fast get credit for it.

`python -m nas.bench proxy` measures each one's rank correlation against longer training.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.arch import ArchConfig
from nas.config.schema import ProxySettings
from nas.errors import NasError
from nas.quality.training import ProxyResult

ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.5)  # power-law exponents tried by the extrapolation fit


class QualityProxy(ABC):
    """Scores a candidate's quality; lower is better."""

    name: str
    trains: bool  # whether a proxy training run is needed at all

    def checkpoint_steps(self, settings: ProxySettings) -> list[int]:
        """Step counts where held-out bits per byte must be measured during training."""
        return []

    def identity(self) -> dict[str, Any]:
        """What decides its scores: part of the study identity and of the trial cache key."""
        return {"name": self.name}

    @abstractmethod
    def score(self, arch: ArchConfig, result: ProxyResult | None) -> float:
        """The objective value; `result` is the training run when `trains` is true."""


class TrainProxy(QualityProxy):
    name = "train"
    trains = True

    def score(self, arch: ArchConfig, result: ProxyResult | None) -> float:
        if result is None:
            raise ValueError("the train proxy needs a training result")
        return result.bpb


class ParamsProxy(QualityProxy):
    name = "params"
    trains = False

    def score(self, arch: ArchConfig, result: ProxyResult | None) -> float:
        return -math.log10(arch.non_embedding_params)


class ExtrapolateProxy(QualityProxy):
    """Power-law extrapolation of held-out bits per byte measured at checkpoints."""

    name = "extrapolate"
    trains = True

    def __init__(self, *, fractions: Sequence[float] | None, horizon: float | None) -> None:
        if fractions is None or horizon is None:
            raise NasError("proxy=extrapolate needs proxy.checkpoints and proxy.horizon")
        if horizon < 1:
            raise NasError(f"proxy.horizon must be >= 1 (a multiple of proxy.steps), got {horizon}")
        if len(fractions) < 2:
            raise NasError("proxy.checkpoints needs >= 2 fractions of the steps to fit a curve")
        self.fractions = sorted(float(f) for f in fractions)
        self.horizon = float(horizon)

    def checkpoint_steps(self, settings: ProxySettings) -> list[int]:
        return checkpoint_steps(self.fractions, settings.steps)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoints": self.fractions, "horizon": self.horizon}

    def score(self, arch: ArchConfig, result: ProxyResult | None) -> float:
        if result is None or not result.checkpoints:
            raise ValueError("the extrapolate proxy needs checkpoints from the training run")
        steps = [c[0] for c in result.checkpoints]
        bpbs = [c[1] for c in result.checkpoints]
        return extrapolate(steps, bpbs, self.horizon * max(steps))


def checkpoint_steps(fractions: Sequence[float], steps: int) -> list[int]:
    """Distinct step counts at these fractions of a run, strictly inside it."""
    chosen = {round(f * steps) for f in fractions}
    return sorted(s for s in chosen if 0 < s < steps)


def extrapolate(steps: Sequence[int], bpbs: Sequence[float], at: float) -> float:
    """Least-squares fit of `c + a * t^-alpha` (a >= 0, alpha from `ALPHAS`), read at `at`.

    Falls back to the last measured value when the curve is not falling (nothing to extrapolate).
    """
    t = np.asarray(steps, dtype=float)
    y = np.asarray(bpbs, dtype=float)
    best: tuple[float, float] | None = None  # (residual, prediction)
    for alpha in ALPHAS:
        x = t**-alpha
        design = np.stack([np.ones_like(x), x], axis=1)
        (c, a), *_ = np.linalg.lstsq(design, y, rcond=None)
        if a <= 0:
            continue
        residual = float(np.sum((design @ np.array([c, a]) - y) ** 2))
        if best is None or residual < best[0]:
            best = (residual, float(c + a * at**-alpha))
    return float(y[-1]) if best is None else min(best[1], float(y[-1]))
