"""Benchmarks: `python -m nas.bench NAME [KEY=VALUE ...]`, one module per benchmark.

Each module `nas/bench/<name>.py` defines `main(argv: list[str]) -> int` and a docstring whose
first line describes it; its output is pasted, with the command, machine and date, into
BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nas.cli import split_own


def split_options(
    argv: list[str], defaults: dict[str, Any], *, budget: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A benchmark's own `KEY=VALUE` options (the keys of `defaults`, typed like their default)
    apart from the Hydra overrides it passes on; `budget` is added when none is given."""
    schema = dataclasses.make_dataclass(
        "BenchOptions",
        [(key, type(value), dataclasses.field(default=value)) for key, value in defaults.items()],
    )
    options, overrides = split_own(argv, schema)
    if budget and not any(o.startswith("budget=") for o in overrides):
        overrides.append(f"budget={budget}")
    return dataclasses.asdict(options), overrides
