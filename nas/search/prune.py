"""A prune study's parent (`search_space=prune search_space.parent=DIR`), set up before the first
trial: loaded and checked (one line and exit 2 for a parent that cannot serve, before anything is
written), its importance computed or read from the cache, its own bits per byte measured once per
study as the reference its children are read against.

A parent larger than the device could ever run is refused here: the smallest child the space can
sample (per objective, by coordinate descent over the space's choices, as the hypervolume's
reference finds the largest) is priced with the study's cheap objectives, and a limit that even
that child exceeds is named.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from nas import records
from nas.config.schema import Settings
from nas.errors import NasError
from nas.hardware import DeployBudget
from nas.objectives.cheap import CheapObjectives
from nas.objectives.hypervolume import space_nadir
from nas.quality.training import ProxyData
from search_spaces import SearchSpace

if TYPE_CHECKING:
    from nas.parent import Parent
    from nas.quality.pruned import Pruning

log = logging.getLogger("nas.search")


def parent_of(space: SearchSpace) -> Parent | None:
    """The space's parent, loaded with light checks only (no torch); None for other spaces."""
    directory = getattr(space, "parent", None)
    if directory is None:
        return None
    from nas.parent import load_parent

    return load_parent(directory)


def check_reach(space: SearchSpace, cheap: CheapObjectives, deploy: DeployBudget) -> None:
    """Refuse a parent whose smallest child is still over a device limit."""
    memory = -space_nadir(space, lambda c: -cheap(c).memory.mean)
    decode = -space_nadir(space, lambda c: -cheap(c).decode.mean)
    over = []
    if memory > deploy.max_memory_mb:
        over.append(
            f"{memory:.0f} MB against hardware.deploy.max_memory_mb={deploy.max_memory_mb:g}"
        )
    if decode > deploy.max_decode_ms:
        over.append(
            f"{decode:.1f} ms/token against hardware.deploy.max_decode_ms={deploy.max_decode_ms:g}"
        )
    if over:
        raise NasError(
            f"the parent is too large for this device even fully pruned: its smallest child "
            f"needs {' and '.join(over)}; choose a smaller parent or another hardware="
        )


def load(settings: Settings, parent: Parent, data: ProxyData, info: dict[str, Any]) -> Pruning:
    """The parent's model and importance (cached under cache_dir) and how children learn."""
    from nas.quality.pruned import load_pruning

    proxy = settings.proxy
    return load_pruning(
        parent,
        data,
        info,
        proxy.training,
        Path(settings.cache_dir),
        temperature=proxy.distill_temperature,
        weight=proxy.distill_weight,
    )


def reference(study: optuna.Study, pruning: Pruning, data: ProxyData, settings: Settings) -> dict:
    """The study's `parent` attribute, with the parent's own held-out bits per byte measured
    once (a resumed study keeps what it measured)."""
    stored = records.parent(study)
    if stored and stored.get("fingerprint") == pruning.parent.fingerprint:
        return stored
    bpb = pruning.reference_bpb(data, settings.proxy.training)
    value = {
        "directory": str(pruning.parent.directory),
        "fingerprint": pruning.parent.fingerprint,
        "family": pruning.family,
        "arch": pruning.parent.arch.to_dict(),
        "params": pruning.parent.arch.params,
        "bpb": bpb,
        "distill": {"temperature": pruning.temperature, "weight": pruning.weight},
    }
    records.store_parent(study, value)
    log.info("parent %s: %.4f held-out bits per byte", pruning.parent.directory, bpb)
    return value
