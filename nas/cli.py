"""What every command shares at its edge: log set-up, and reading its own `KEY=VALUE` settings.

A command's own settings are a dataclass (e.g. `nas.export`'s `trial`, `out`, `force`, `onnx`);
`split_own` takes the arguments whose key names one of its fields, types and range-checks them
with the same checker as the search's configuration (`nas.config.rules`), and hands back the rest
as Hydra overrides. Every command parses its arguments through it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import optuna
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nas.config.rules import field_type, typed
from nas.errors import NasError

T = TypeVar("T")


def configure_logging(level: int = logging.INFO) -> None:
    """Our own log lines at `level`; Optuna's per-trial lines and experimental-API notices off
    (`group=True` and metric names are marked experimental; they are stable in what we use)."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence libraries that log at INFO/WARNING for every node they touch (ONNX Runtime's
    quantizers) and restore the root logger they reconfigure on import (`basicConfig(INFO)`)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        root.handlers[:] = handlers
        root.setLevel(level)


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def split_own(argv: Sequence[str], schema: type[T], *, others: bool = True) -> tuple[T, list[str]]:
    """The command's own settings (`KEY=VALUE` whose first key part is a field of `schema`),
    typed and checked, and the remaining arguments (Hydra overrides for the search's
    configuration). With `others=False` any other key is an error listing the command's keys."""
    names = [f.name for f in dataclasses.fields(schema)]  # type: ignore[arg-type]
    own: list[str] = []
    rest: list[str] = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if not sep:
            raise NasError(f"expected KEY=VALUE, got '{arg}'")
        if key.split(".", 1)[0] in names:
            own.append(arg)
        elif others:
            rest.append(arg)
        else:
            raise NasError(f"unknown key '{key}'; keys: {', '.join(names)}")
    return typed(schema, _values(own, schema)), rest


def _values(pairs: list[str], schema: type) -> dict[str, Any]:
    """Nested values of `KEY=VALUE` pairs: YAML-typed, except text fields, which keep the text
    as given (`trial=007` stays "007")."""
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(pairs))
    except OmegaConfBaseException as err:
        raise NasError(f"cannot read {' '.join(pairs)}: {str(err).splitlines()[0]}") from None
    assert isinstance(values, dict)
    for pair in pairs:
        key, _, raw = pair.partition("=")
        path = key.split(".")
        if field_type(schema, path) in (str, "str"):
            node = values
            for name in path[:-1]:
                node = node[name]
            node[path[-1]] = raw
    return values
