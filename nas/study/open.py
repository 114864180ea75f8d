"""Create a study, or load it to resume; a resumed study must keep the identity it started with."""

from __future__ import annotations

from typing import Any

import optuna

from nas import records
from nas.errors import NasError
from nas.study.identity import differences
from nas.study.lock import lock_study
from nas.study.storage import open_storage, storage_errors


def open_study(
    *,
    name: str,
    storage: str,
    identity: dict[str, Any],
    heartbeat_s: int = 10,
    grace_s: int = 30,
    retries: int = 2,
) -> optuna.Study:
    """The study `name` in `storage` (created when absent), locked for writing where the
    storage takes one writer, and checked against `identity`; see `open_storage` for the
    storage kinds. Its sampler is a placeholder: the caller sets the real one, seeded by the
    trials already stored (`nas.samplers.build_sampler`)."""
    backend = open_storage(storage, heartbeat_s=heartbeat_s, grace_s=grace_s, retries=retries)
    lock_study(storage)
    with storage_errors(storage, opening=True):  # a full, damaged or unreachable storage
        study = optuna.create_study(
            study_name=name,
            storage=backend,
            sampler=optuna.samplers.RandomSampler(),
            directions=["minimize"] * len(records.OBJECTIVES),
            load_if_exists=True,
        )
        stored = records.identity(study)
        if stored is None:
            records.store_identity(study, identity)
            study.set_metric_names(list(records.OBJECTIVES))
            return study
    changed = differences(stored, identity)  # nas.study.identity: which keys, precisely
    if changed:
        raise NasError(
            f"study '{name}' was started with other settings ({', '.join(changed)} differ); "
            "pick a new study.name or run with the original settings"
        )
    return study
