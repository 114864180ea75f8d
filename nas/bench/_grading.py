"""How well a score ranks architectures against the truth: Kendall tau, top-k overlap, the
regret of its pick, and the noise ceiling of the truth itself (shared by the fidelity benches)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.stats import kendalltau


def tau(score: Sequence[float], truth: Sequence[float]) -> float:
    return float(kendalltau(score, truth).statistic)


def top_k_overlap(score: Sequence[float], truth: Sequence[float], k: int = 5) -> int:
    """How many of the truly best k (lowest) are among the score's best k."""

    def best(xs: Sequence[float]) -> set[int]:
        return set(sorted(range(len(xs)), key=lambda i: xs[i])[:k])

    return len(best(score) & best(truth))


def regret(score: Sequence[float], truth: Sequence[float]) -> float:
    """The truth of the score's pick (its lowest) minus the true best, in bits per byte."""
    pick = int(np.argmin(score))
    return float(truth[pick] - min(truth))


def noise_ceiling(seeds: Sequence[Sequence[float]]) -> dict[str, float]:
    """The truth's own repeatability: Kendall tau between its seeds (every pair), and of each
    seed against the mean of the others. `seeds[s][i]`: seed s, architecture i."""
    x = np.asarray(seeds, dtype=float)
    pairs = [tau(x[a], x[b]) for a, b in itertools.combinations(range(len(x)), 2)]
    rest = [tau(x[s], np.delete(x, s, axis=0).mean(axis=0)) for s in range(len(x))]
    return {
        "tau_between_seeds": float(np.mean(pairs)) if pairs else float("nan"),
        "tau_between_seeds_min": float(np.min(pairs)) if pairs else float("nan"),
        "tau_seed_vs_rest": float(np.mean(rest)) if len(x) > 1 else float("nan"),
    }


def grade(score: Sequence[float], truth: Sequence[float], k: int = 5) -> dict[str, float]:
    return {
        "kendall_tau": tau(score, truth),
        f"top{k}": top_k_overlap(score, truth, k),
        "regret_bpb": regret(score, truth),
    }
