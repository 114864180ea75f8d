"""Compose the Hydra configuration from `hydra_configs/` and command-line overrides.

The commands call Hydra's compose API rather than `@hydra.main` so that a bad override becomes one
line naming the valid choices (exit code 2) instead of Hydra's multi-line report, and so that tests
compose exactly what the command line composes.
"""

from __future__ import annotations

from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nas.errors import NasError

CONFIG_MODULE = "hydra_configs"


def _auto_budget(overrides: list[str]) -> list[str]:
    """`budget=auto` (the default) means `gpu` where CUDA is present and `cpu` elsewhere."""
    chosen = [o for o in overrides if o.split("=", 1)[0] == "budget"]
    if chosen and chosen[-1] != "budget=auto":
        return overrides
    import torch  # deferred: only the default path needs it

    budget = "gpu" if torch.cuda.is_available() else "cpu"
    return [o for o in overrides if o.split("=", 1)[0] != "budget"] + [f"budget={budget}"]


def _check_group_choices(overrides: list[str]) -> None:
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise NasError(f"cannot read override: {str(err).splitlines()[0]}") from None
    loader = GlobalHydra.instance().config_loader()
    groups = set(loader.list_groups(""))
    for override in parsed:
        group = override.key_or_group
        if group not in groups or override.is_delete():
            continue
        options = loader.get_group_options(group)
        value = override.value()
        if not isinstance(value, str) or value not in options:
            raise NasError(f"unknown {group} '{value}'; choose one of: {', '.join(options)}")


def _explain_bad_key(overrides: list[str]) -> str | None:
    """Find the override whose key the config lacks, and list the keys that exist there."""
    groups = set(GlobalHydra.instance().config_loader().list_groups(""))
    base = compose("config", overrides=[o for o in overrides if o.split("=", 1)[0] in groups])
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if override.startswith(("+", "~")) or OmegaConf.select(base, key) is not None:
            continue
        if OmegaConf.select(base, key, default="<absent>") != "<absent>":
            continue  # the key exists and is null
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(base, parent) if parent else base
        if isinstance(node, DictConfig):
            where = f"'{parent}'" if parent else "the top level"
            return f"unknown key '{key}'; {where} has: {', '.join(str(k) for k in node)}"
        return f"unknown key '{key}': '{parent}' is not a group of settings"
    return None


def compose_config(overrides: list[str], *, config_name: str = "config") -> DictConfig:
    """The resolved configuration for these overrides; a `NasError` when one is wrong."""
    overrides = _auto_budget(list(overrides))
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        _check_group_choices(overrides)
        try:
            cfg = compose(config_name, overrides=overrides)
        except HydraException as err:
            reason = _explain_bad_key(overrides) or str(err).splitlines()[0]
            raise NasError(reason) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise NasError(f"config cannot be resolved: {str(err).splitlines()[0]}") from None
    return cfg


def as_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def require_int(cfg: DictConfig, key: str, *, minimum: int = 0) -> int:
    """Read an integer setting, or say which override to fix."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NasError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def require_float(cfg: DictConfig, key: str, *, minimum: float = 0.0) -> float:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise NasError(f"{key} must be a number >= {minimum}, got {value!r}")
    return float(value)
