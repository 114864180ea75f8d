"""The Optuna study: storage, sampler, constraints, and the identity a resumed study must keep."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from sqlalchemy.exc import SQLAlchemyError

from nas.errors import NasError, redact

log = logging.getLogger(__name__)

OBJECTIVES = ("bpb", "decode_ms", "memory_mb")  # all minimised


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Within every device limit. Constraints are set per trial with `Trial.set_constraint`
    (Optuna 5 deprecates the sampler's `constraints_func`; its samplers read these instead)."""
    return all(v <= 0 for v in trial.constraints.values())


def prepare_storage(url: str) -> str:
    """Create the folder of a SQLite file; refuse storages that cannot be written."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe = path.parent / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise NasError(
                f"cannot write the study database folder {path.parent}: {err.strerror}; "
                "pass runs_dir=PATH (or study.storage=URL) somewhere writable"
            ) from None
    return url


def make_sampler(cfg: DictConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded where the sampler takes a seed."""
    target = instantiate(cfg, _partial_=True)
    takes_seed = "seed" in inspect.signature(target.func).parameters
    return target(seed=seed) if takes_seed else target()


def open_study(
    *, name: str, storage: str, sampler_cfg: DictConfig, seed: int, identity: dict[str, Any]
) -> optuna.Study:
    """Create the study, or load it to resume; a resumed study must match `identity`.

    The sampler's seed is offset by the trials already stored, so that a resumed study does not
    replay the first run's random start-up samples.
    """
    url = prepare_storage(storage)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=url,
            sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trials are known
            directions=["minimize"] * len(OBJECTIVES),
            load_if_exists=True,
        )
        study.sampler = make_sampler(sampler_cfg, seed + len(study.trials))
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise NasError(f"cannot open study storage {redact(url)}: {reason}") from None
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_metric_names(list(OBJECTIVES))
    else:
        changed = sorted(k for k in identity if k in stored and stored[k] != identity[k])
        if changed:
            raise NasError(
                f"study '{name}' was started with other settings ({', '.join(changed)} differ); "
                "pick a new study.name or run with the original settings"
            )
    return study
