"""Compose the Hydra configuration from `hydra_configs/` and command-line overrides, once.

The commands call Hydra's compose API rather than `@hydra.main` so that a bad override becomes one
line naming the valid choices (exit code 2) instead of Hydra's multi-line report, and so that tests
compose exactly what the command line composes. `load_settings` is the one place a configuration
is validated: types while Hydra merges it into the schema (`nas.config.schema`), then every range.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from nas.config.rules import check, explain
from nas.config.schema import QUANT_FORMATS, Settings, check_settings, register
from nas.errors import NasError

CONFIG_MODULE = "hydra_configs"


def _auto_budget(overrides: list[str]) -> list[str]:
    """`budget=auto` (the default) means `gpu` where CUDA is present and `cpu` elsewhere."""
    chosen = [o for o in overrides if o.split("=", 1)[0] == "budget"]
    if chosen and chosen[-1] != "budget=auto":
        return overrides
    budget = "gpu" if cuda_present() else "cpu"
    return [o for o in overrides if o.split("=", 1)[0] != "budget"] + [f"budget={budget}"]


def _torch_build() -> dict[str, Any]:
    """The constants of torch's `version.py` (`cuda`, `hip`, ...), read without importing torch;
    empty when torch or the file cannot be found."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {}
    try:
        tree = ast.parse((Path(spec.submodule_search_locations[0]) / "version.py").read_text())
    except (OSError, SyntaxError):
        return {}
    build: dict[str, Any] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            build[target.id] = value.value
    return build


def cuda_present() -> bool:
    """Whether torch sees a CUDA (or ROCm) device. A CPU build of torch says so in its
    `version.py`, read without importing torch (seconds): `--help`, argument errors and the
    study lookups of export and report need no torch on a CPU machine."""
    if "torch" not in sys.modules:
        build = _torch_build()
        if build and not (build.get("cuda") or build.get("hip")):
            return False
    import torch

    return bool(torch.cuda.is_available())


def _check_group_choices(overrides: list[str]) -> None:
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as err:
        raise NasError(_unreadable(parser, overrides, err)) from None
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


def _unreadable(parser: OverridesParser, overrides: list[str], err: HydraException) -> str:
    """Which override Hydra cannot read, and how to quote it."""
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except HydraException as own:
            reason = str(own).splitlines()[0]
            return (
                f"cannot read override '{override}': {reason}; quote a value that holds "
                "=, [, ], {, }, (, ), commas or spaces: KEY='VALUE'"
            )
    return f"cannot read override: {str(err).splitlines()[0]}"


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


def _why(err: HydraException, overrides: list[str]) -> str:
    """One line for a failed composition: a type error names key, rule and value."""
    cause = err.__cause__ or err.__context__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ValidationError):  # a value of the wrong type or out of its choices
        return explain(cause, Settings)
    return _explain_bad_key(overrides) or str(err).splitlines()[0]


def compose_config(overrides: list[str], *, config_name: str = "config") -> DictConfig:
    """The resolved, type-checked configuration for these overrides; a `NasError` when one is
    wrong. `load_settings` also checks the ranges and returns typed settings."""
    register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        # Before `auto` may ask torch (on a GPU build), which takes seconds.
        _check_group_choices([o for o in overrides if o != "budget=auto"])
        overrides = _auto_budget(list(overrides))
        try:
            cfg = compose(config_name, overrides=overrides)
        except HydraException as err:
            raise NasError(_why(err, overrides)) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        if "could not be converted" in str(err) or "is not a valid" in str(err):
            raise NasError(explain(err, Settings)) from None
        raise NasError(f"config cannot be resolved: {str(err).splitlines()[0]}") from None
    return cfg


def to_settings(cfg: DictConfig) -> Settings:
    """A composed configuration as typed settings, every range checked."""
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise NasError(explain(err, Settings)) from None
    if not isinstance(settings, Settings):
        raise NasError("the configuration does not follow the settings schema")
    check(settings)
    if settings.hardware.runtime not in ("onnxruntime", settings.runtime.name):  # the group decides
        raise NasError(
            f"hardware.runtime={settings.hardware.runtime} is set by the runtime group; "
            f"pass runtime={settings.hardware.runtime} instead"
        )
    settings.hardware = settings.hardware.for_runtime(settings.runtime.name)
    if settings.compression.int8_activations is None:  # the runtime's own fast format
        settings.compression.int8_activations = settings.hardware.int8_activations
    if settings.compression.quant_format is None:  # the runtime's own numerics
        settings.compression.quant_format = QUANT_FORMATS[settings.runtime.name]
    check_settings(settings)
    check_device(settings.device)
    check_search_space(settings)
    return settings


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device: str) -> None:
    """`device` names one torch can use here: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`, and the
    accelerator it names is present (torch is asked only then)."""
    if not _DEVICE.fullmatch(device):
        raise NasError(f"device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        present, count = torch.backends.mps.is_available(), 1
    else:
        present, count = torch.cuda.is_available(), torch.cuda.device_count()
    index = int(device.partition(":")[2] or 0)
    if not present or index >= count:
        seen = f"{count} CUDA device(s)" if present else "none"
        raise NasError(
            f"device={device} is not available here (torch sees {seen}); use auto or cpu"
        )


def check_search_space(settings: Settings) -> None:
    """The search space plugin's constructor is its schema: building it once here refuses a bad
    choice (`search_space.head_dim=[3]`) before any work starts, whichever command composed the
    settings. The search builds it again with the tokenizer's real vocabulary."""
    space = settings.search_space
    if isinstance(space, dict) and space.get("_target_"):
        vocab = settings.proxy.vocab_size
        build("search_space", space, vocab_size=vocab, caps=settings.budget.caps)


def load_settings(overrides: list[str]) -> Settings:
    """The settings these overrides give, validated in full; the one entry of every command."""
    return to_settings(compose_config(overrides))


def plain(node: Any) -> Any:
    """A config node (or a settings mapping) as plain Python containers."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def build(group: str, node: dict[str, Any], **kwargs: Any) -> Any:
    """Instantiate a plugin group's `_target_` with `kwargs`; its constructor's complaint about
    the settings becomes one line (Hydra wraps it in its own exception)."""
    from hydra.utils import instantiate  # deferred: only commands that build plugins need it

    try:
        return instantiate(dict(node), **kwargs, _convert_="all")
    except NasError:
        raise
    except Exception as err:
        cause = err.__cause__ or err
        if isinstance(cause, NasError):
            raise cause from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise NasError(f"{group} cannot be built: {reason}") from None
