"""Latency and memory predictors for candidates on a hardware profile."""

from __future__ import annotations

from predictors.base import Estimate, Predictor
from predictors.memory import MemoryModel
from predictors.roofline import RooflineLatency

__all__ = ["Estimate", "MemoryModel", "Predictor", "RooflineLatency"]
