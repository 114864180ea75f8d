"""Which candidates train longer: asynchronous successive halving over three objectives.

When a candidate finishes rung k it is compared with every candidate measured at rung k so far
(other workers' included, running or finished): of the n candidates there, the top floor(n / eta)
go on to rung k+1. Positions come from non-dominated sorting of (bits per byte at rung k, decode
ms, memory MB): the non-dominated layer first, then the next; inside a layer, the larger share of
the layer's hypervolume a candidate alone contributes comes first.

Nobody waits for a rung to fill (ASHA, Li et al. 2020). As in ASHA, a candidate that is not in the
top share when it finishes may go on later, once enough peers have joined its rung for it to be
(`nas.search.late`). So the first candidates of a study are not promoted for lack of peers, as
they were while the share was rounded up: a 3.3M-parameter first pick once climbed alone for 46%
of the default search's time. Once a study has sampled its last candidate no peer will come, and
the share is rounded up (`round_up`): a study of one candidate still measures it at the top.
"""

from __future__ import annotations

import math

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


def places(n: int, eta: float, round_up: bool = False) -> int:
    """How many of the `n` candidates measured at a rung go on: floor(n / eta), as in ASHA, or
    ceil(n / eta) once no more candidates will come."""
    rounded = math.ceil(n / eta - 1e-9) if round_up else math.floor(n / eta + 1e-9)
    return int(rounded)


def promotable(
    points: np.ndarray, reference: Reference, eta: float, round_up: bool = False
) -> list[int]:
    """Row indices of `points` (one rung's results) in the top share, best first."""
    return order(points, reference)[: places(len(points), eta, round_up)]


def promote(
    me: int, points: np.ndarray, reference: Reference, eta: float, round_up: bool = False
) -> tuple[bool, str]:
    """Whether row `me` of `points` (this rung's results so far) is promoted, and why."""
    position = order(points, reference).index(me)
    n, top = len(points), places(len(points), eta, round_up)
    share = f"the top {top} = {'ceil' if round_up else 'floor'}({n}/{eta:g})"
    verdict = position < top
    why = f"in {share}" if verdict else f"not in {share}; may go on later"
    return verdict, f"rank {position + 1} of {n} ({why})"
