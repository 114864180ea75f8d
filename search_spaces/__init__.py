"""Search spaces: each turns an Optuna trial into a valid `Candidate`."""

from __future__ import annotations

from search_spaces.base import SearchSpace
from search_spaces.prune import PruneSpace
from search_spaces.slm import SLMSpace

__all__ = ["PruneSpace", "SLMSpace", "SearchSpace"]
