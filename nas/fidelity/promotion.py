"""Which candidates train longer: asynchronous successive halving over three objectives.

When a candidate finishes rung k it is compared with every candidate measured at rung k so far
(other workers' included, running or finished): it is promoted to rung k+1 when its position is
within the top 1/eta. Positions come from non-dominated sorting of (bits per byte at rung k,
decode ms, memory MB): the non-dominated layer first, then the next; inside a layer, the larger
share of the layer's hypervolume a candidate alone contributes comes first. Nobody waits for a
rung to fill (ASHA, Li et al. 2020); as in ASHA, the first candidates of a study are judged
against few peers and are promoted more easily.
"""

from __future__ import annotations

import numpy as np

from nas.objectives.hypervolume import Reference, hypervolume


def dominated(points: np.ndarray) -> np.ndarray:
    """For each point (row), whether another point dominates it (all objectives minimised)."""
    less_equal = np.all(points[None, :, :] <= points[:, None, :], axis=2)
    less = np.any(points[None, :, :] < points[:, None, :], axis=2)
    return np.any(less_equal & less, axis=1)


def layers(points: np.ndarray) -> list[list[int]]:
    """Row indices of `points` by non-dominated layer: the non-dominated rows, then those only
    they dominate, and so on."""
    remaining = list(range(len(points)))
    out: list[list[int]] = []
    while remaining:
        layer = [remaining[i] for i, d in enumerate(dominated(points[remaining])) if not d]
        out.append(layer)
        remaining = [i for i in remaining if i not in layer]
    return out


def order(points: np.ndarray, reference: Reference) -> list[int]:
    """Row indices of `points`, best first (see the module doc)."""
    ranked: list[int] = []
    for layer in layers(points):
        whole = hypervolume(points[layer], reference)
        alone = {
            i: whole - hypervolume(points[[j for j in layer if j != i]], reference) for i in layer
        }
        ranked += sorted(layer, key=lambda i: (-alone[i], i))
    return ranked


def promote(me: int, points: np.ndarray, reference: Reference, eta: float) -> tuple[bool, str]:
    """Whether row `me` of `points` (this rung's results so far) is promoted, and why."""
    position = order(points, reference).index(me)
    n = len(points)
    verdict = position < n / eta
    share = f"top 1/{eta:g}" if verdict else f"not in the top 1/{eta:g}"
    return verdict, f"rank {position + 1} of {n} ({share})"
