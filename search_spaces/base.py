"""The search-space contract (tests/search_spaces/test_contract.py runs it on every space):

- `suggest(trial)` returns a valid `Candidate` for any trial, with no sample-then-reject;
- the same parameters give the same candidate (`candidate_from_params` replays a finished trial);
- a seeded sampler reproduces a sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from nas.arch import Candidate

if TYPE_CHECKING:  # Optuna loads with the study: a space's settings are checked without it
    import optuna


class SearchSpace(ABC):
    """Architectures and compression settings, sampled through an Optuna trial."""

    def __init__(self, *, name: str, vocab_size: int) -> None:
        self.name = name
        self.vocab_size = vocab_size

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Sample one candidate; every sample is valid by construction."""

    def candidate_from_params(self, params: dict[str, Any]) -> Candidate:
        """Rebuild the candidate a finished trial evaluated, from its recorded parameters."""
        from optuna.trial import FixedTrial

        return self.suggest(FixedTrial(params))

    @abstractmethod
    def choices(self) -> dict[str, list[Any]]:
        """The choices left after the budget's caps: for reports and error messages."""
