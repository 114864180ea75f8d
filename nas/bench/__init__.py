"""Benchmarks: `python -m nas.bench NAME [KEY=VALUE ...]`, one module per benchmark.

Each module `nas/bench/<name>.py` defines `main(argv: list[str]) -> int` and a docstring whose
first line describes it; its output is pasted, with the command, machine and date, into
BENCHMARKS.md.
"""

from __future__ import annotations

from typing import Any

from nas.errors import NasError


def split_options(
    argv: list[str], defaults: dict[str, Any], *, budget: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A benchmark's own `KEY=VALUE` options (the keys of `defaults`, typed like their default)
    apart from the Hydra overrides it passes on; `budget` is added when none is given."""
    opts, overrides = dict(defaults), []
    for item in argv:
        key, _, value = item.partition("=")
        if key not in defaults:
            overrides.append(item)
            continue
        kind = type(defaults[key])
        try:
            opts[key] = kind(value)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise NasError(f"{key} must be {what}, got {value!r}") from None
    if budget and not any(o.startswith("budget=") for o in overrides):
        overrides.append(f"budget={budget}")
    return opts, overrides
