"""Benchmarks: `python -m nas.bench NAME [KEY=VALUE ...]`, one module per benchmark.

Each module `nas/bench/<name>.py` defines `main(argv: list[str]) -> int` and a docstring whose
first line describes it; its output is pasted, with the command, machine and date, into
BENCHMARKS.md.
"""

from __future__ import annotations
