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

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nas.config.rules import field_type, typed
from nas.errors import InterruptedCleanupFilter, NasError, RedactingFilter

T = TypeVar("T")


def configure_logging(level: int = logging.INFO) -> None:
    """Our own log lines at `level`; Optuna's per-trial lines and experimental-API notices off
    (`group=True` and metric names are marked experimental; they are stable in what we use)."""
    import optuna  # deferred: `--help` and argument errors answer without it

    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # torchao (the [executorch] extra, which transformers imports when it is installed) logs
    # that its CUDA kernels and Triton are missing on every CPU run, and torch's ONNX exporter
    # that torchvision's operators are not registered: not ours to act on.
    for name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)
    redact_logs()


def redact_logs() -> None:
    """No database password in any log line: a `RedactingFilter` on every handler of the root
    logger and of Optuna's (which does not pass its records up), installed once each; before
    it, an `InterruptedCleanupFilter` (it reads the record's exception, which redaction folds
    into the text)."""
    for logger in (logging.getLogger(), logging.getLogger("optuna")):
        for handler in logger.handlers:
            if not any(isinstance(f, InterruptedCleanupFilter) for f in handler.filters):
                handler.filters.insert(0, InterruptedCleanupFilter())
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


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


class _ReportedOnce(logging.Filter):
    """Optuna logs every failed trial (its traceback, then "Trial N failed with value None"),
    then re-raises what `catch` does not hold: Ctrl-C, SIGTERM, a storage failure, a `NasError`,
    a bug. Those stop the run and are reported once, by `nas.errors.run_cli` (one line, or a
    bug's traceback), so both records are dropped; failures the run survives (`catch`) keep
    their log lines."""

    def __init__(self, catch: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.catch = catch
        self.dropped: set[str] = set()  # "Trial N failed": its follow-up line goes too

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        head = " ".join(record.getMessage().split()[:3])  # "Trial 7 failed"
        if error is None:
            return head not in self.dropped
        if isinstance(error, self.catch):
            return True
        self.dropped.add(head)
        return False


@contextlib.contextmanager
def reported_once(catch: tuple[type[BaseException], ...]) -> Iterator[None]:
    """`_ReportedOnce` on Optuna's loggers while the block runs. A filter on the `optuna` logger
    alone misses the record: Optuna logs it on `optuna.study._optimize`, and a parent logger's
    filters do not see records its children pass up (only its handlers do), so the filter sits
    on every `optuna.*` logger and on the handlers of `optuna` and of the root logger."""
    quiet = _ReportedOnce(catch)
    names = ["optuna", *(n for n in logging.root.manager.loggerDict if n.startswith("optuna."))]
    loggers = [logging.getLogger(n) for n in names]
    handlers = [*logging.getLogger("optuna").handlers, *logging.getLogger().handlers]
    for item in [*loggers, *handlers]:
        item.addFilter(quiet)
    try:
        yield
    finally:
        for item in [*loggers, *handlers]:
            item.removeFilter(quiet)


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
