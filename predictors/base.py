"""The predictor contract: a candidate in, an estimate (mean and spread) per quantity out.

Every predictor passes tests/predictors/test_contract.py: positive means, non-negative spreads,
more work never predicted faster, fewer bits never predicted larger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from nas.arch import Candidate
from nas.hardware import HardwareProfile

# The priors' form, stored in every study they price: it changes whenever the roofline or memory
# prior prices a candidate otherwise, so a study never resumes with prices of two forms. Studies
# before 2026-12-07 stored "prior" (no padding, ExecuTorch's layout ignored), then "prior: the
# runtime's layout (2026-12-07)" (float weights and KV cache priced as fp16 on CPUs too), then
# "prior: the runtime's layout, float as exported (2026-12-07)" (a tied LM head held once).
PRIOR_FORM = "prior: the runtime's layout, float and LM head as held (2026-12-07)"


@dataclass(frozen=True)
class Estimate:
    """A predicted quantity: `mean` with a one-sigma `std` in the same unit."""

    mean: float
    std: float

    def upper(self, sigmas: float) -> float:
        """A pessimistic value: `sigmas` standard deviations above the mean."""
        return self.mean + sigmas * self.std


class Predictor(ABC):
    """Predicts some `quantities` of a candidate on one hardware profile."""

    quantities: ClassVar[tuple[str, ...]]

    def __init__(self, hardware: HardwareProfile) -> None:
        self.hardware = hardware

    @property
    def calibrated(self) -> bool:
        """True when fitted to measurements from the device, False for a prior."""
        return False

    @property
    def provenance(self) -> str:
        """One line saying where the predictor's numbers come from."""
        return (
            f"roofline prior from hydra_configs/hardware/{self.hardware.name}.yaml (uncalibrated)"
        )

    @property
    def elsewhere(self) -> str | None:
        """A warning when the numbers may describe another machine than this one (None here:
        a prior is for the hardware file's device, wherever it runs)."""
        return None

    @property
    def identity(self) -> str:
        """What a study stores to tell these numbers from another predictor's: a prior's numbers
        are the hardware file's, which the study's settings already hold, priced in the prior's
        form (`PRIOR_FORM`)."""
        return PRIOR_FORM

    @abstractmethod
    def predict(self, candidate: Candidate) -> dict[str, Estimate]:
        """One `Estimate` for each name in `quantities`."""
