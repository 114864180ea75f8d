"""What every command sets up before it runs: log format, and Optuna's chatter turned down."""

from __future__ import annotations

import logging
import warnings

import optuna


def configure_logging(level: int = logging.INFO) -> None:
    """Our own log lines at `level`; Optuna's per-trial lines and experimental-API notices off
    (`group=True` and metric names are marked experimental; they are stable in what we use)."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
