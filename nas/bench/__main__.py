"""Dispatch `python -m nas.bench NAME ...` to `nas.bench.NAME.main`."""

from __future__ import annotations

import importlib
import pkgutil

import nas.bench
from nas.errors import NasError, run_cli


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(nas.bench.__path__) if m.name[0] != "_")


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m nas.bench NAME [KEY=VALUE ...]")
        for name in names:
            doc = (importlib.import_module(f"nas.bench.{name}").__doc__ or "").strip()
            print(f"  {name:<12} {doc.splitlines()[0] if doc else ''}")
        return 0
    if argv[0] not in names:
        raise NasError(f"unknown benchmark '{argv[0]}'; choose one of: {', '.join(names)}")
    return importlib.import_module(f"nas.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    run_cli(main)
