"""The rungs of a study: rung k trains `steps * eta**k` steps, judged after a decay branch.

Training follows a warmup-stable-decay (WSD) schedule: a trunk at constant learning rate, and
for each rung a short branch off the trunk that decays the learning rate over the rung's last
`decay_fraction` of steps before held-out bits per byte is measured. A promoted candidate carries
on from its trunk, so reaching rung k costs the trunk up to rung k plus one decay branch per rung
instead of a fresh run per rung, and its rung-k result is exactly the result of one fresh WSD run
of rung k's length (the batches are a function of the seed and the step; tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass


def decay_steps(total: int, fraction: float) -> int:
    """Steps of the decay branch that ends a warmup-stable-decay run of `total` steps."""
    return min(total - 1, max(1, round(fraction * total))) if total > 1 else 0


@dataclass(frozen=True)
class Rungs:
    """`count` rungs from `steps` training steps, each `eta` times the last; the top rung is
    trained with `seeds` seeds (paired: every candidate uses the same seeds)."""

    steps: int
    eta: float = 3.0
    count: int = 3
    seeds: int = 2
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.count < 1 or self.seeds < 1 or self.eta < 1:
            raise ValueError(f"invalid rungs {self}")
        if not 0.0 < self.decay_fraction < 1.0:
            raise ValueError(f"decay_fraction must be within (0, 1), got {self.decay_fraction}")

    @property
    def top(self) -> int:
        return self.count - 1

    def total(self, rung: int) -> int:
        """Training steps a fresh run of rung `rung` takes (trunk plus decay)."""
        return max(1, round(self.steps * self.eta**rung))

    def decay(self, rung: int) -> int:
        return decay_steps(self.total(rung), self.decay_fraction)

    def trunk(self, rung: int) -> int:
        """Steps of the constant-rate trunk where rung `rung`'s decay branch starts."""
        return self.total(rung) - self.decay(rung)

    def ladder_cost(self, rung: int) -> int:
        """Steps to reach rung `rung` by carrying on: its trunk plus every decay branch."""
        return self.trunk(rung) + sum(self.decay(k) for k in range(rung + 1))

    def extra_cost(self, rung: int) -> int:
        """Steps from rung `rung - 1`'s result to rung `rung`'s (a promotion's price)."""
        return self.ladder_cost(rung) - (self.ladder_cost(rung - 1) if rung > 0 else 0)
