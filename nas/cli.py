"""What every command sets up before it runs: log format, and Optuna's chatter turned down."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import optuna


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
