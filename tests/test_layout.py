"""The layout rules (../shared/DESIGN.md, README "Layout"), checked on the source itself.

- `nas/`'s top level holds the shared vocabulary and sub-packages only;
- every documented command is a package with its own `__main__.py`;
- no import runs from a shared part (or the vocabulary) up into a command, and no command but
  the benchmark command imports another command;
- the plugin packages `search_spaces/` and `predictors/` import only the shared vocabulary.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VOCABULARY = {"arch", "shrink", "hardware", "errors", "config", "cli", "records", "files"}
COMMANDS = {"search", "calibrate", "export", "report", "bench", "predict", "train", "dashboard"}
SHARED = {"study", "objectives", "samplers", "quality", "fidelity", "compression", "onnx",
          "executorch", "parent"}  # fmt: skip
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (deferred imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _part(module: str) -> str | None:
    """`nas.search.run` -> `search`; the vocabulary's modules are their own part."""
    parts = module.split(".")
    return parts[1] if parts[0] == "nas" and len(parts) > 1 else None


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_top_level_holds_the_vocabulary_and_packages_only() -> None:
    modules = {p.stem for p in (ROOT / "nas").glob("*.py")} - {"__init__"}
    packages = {p.name for p in (ROOT / "nas").iterdir() if (p / "__init__.py").is_file()}
    assert modules <= VOCABULARY, modules - VOCABULARY
    assert packages == COMMANDS | SHARED | {"config"}
    doc = (ROOT / "nas" / "__init__.py").read_text()
    assert all(f"`{name}" in doc for name in COMMANDS | SHARED | VOCABULARY)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_its_main(command: str) -> None:
    assert (ROOT / "nas" / command / "__main__.py").is_file()


def test_no_import_runs_up_into_a_command() -> None:
    wrong = []
    for path in _sources("nas"):
        owner = path.relative_to(ROOT / "nas").parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _part(module)
            if target not in COMMANDS or target == owner:
                continue
            if owner in COMMANDS and owner == "bench":
                continue  # the benchmark command drives the commands it measures
            wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


def test_plugins_import_only_the_vocabulary() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for package in ("search_spaces", "predictors")
        for path in _sources(package)
        for module in _imports(path)
        if _part(module) is not None and _part(module) not in VOCABULARY
    ]
    assert not wrong, wrong


def test_the_vocabulary_imports_only_itself() -> None:
    vocabulary = [
        p
        for p in _sources("nas")
        if p.relative_to(ROOT / "nas").parts[0].removesuffix(".py") in VOCABULARY
    ]
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in vocabulary
        for module in _imports(path)
        if _part(module) is not None and _part(module) not in VOCABULARY
    ]
    assert not wrong, wrong


def test_modules_stay_short() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for package in ("nas", "predictors", "search_spaces")
        for p in _sources(package)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
