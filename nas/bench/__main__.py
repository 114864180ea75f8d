"""Dispatch `python -m nas.bench NAME ...` to `nas.bench.NAME.main`."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import nas.bench
from nas.errors import NasError, run_cli


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(nas.bench.__path__) if m.name[0] != "_")


def summary(name: str) -> str:
    """The first line of a benchmark's docstring, read from its source: importing every
    benchmark (torch, transformers, ONNX Runtime) would make `--help` take seconds."""
    path = Path(nas.bench.__path__[0]) / f"{name}.py"
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        doc = ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m nas.bench NAME [KEY=VALUE ...]")
        for name in names:
            print(f"  {name:<12} {summary(name)}")
        return 0
    if argv[0] not in names:
        raise NasError(f"unknown benchmark '{argv[0]}'; choose one of: {', '.join(names)}")
    from nas.cli import configure_logging

    configure_logging()  # before torch loads: libraries' import notices stay off the tables
    return importlib.import_module(f"nas.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    run_cli(main)
