"""Typed settings with valid ranges: one checker for every command's configuration.

A settings dataclass states each field's type in its annotation (OmegaConf enforces it while the
values are merged in) and its range in the field's metadata (`at_least`, `between`, `one_of`),
which `check` enforces afterwards, whichever command composed the settings. A value outside its
type or range is a `NasError` of one line that names the key, the rule and the value given, e.g.
`proxy.lr must be a number > 0, got 'abc'`. Floats must also be finite: nan and inf are never
a setting. Text fields can be held to a pattern (`matches`, e.g. `FILE_NAME`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from nas.errors import NasError

T = TypeVar("T")
RULE = "rule"  # the metadata key a field's rule is stored under


@dataclass(frozen=True)
class Rule:
    """A range (`low`/`high`, either end open) or a set of `choices` for one field."""

    low: float | None = None
    high: float | None = None
    exclusive: bool = False  # the low end is open: `> low` instead of `>= low`
    choices: tuple[Any, ...] = ()
    pattern: str = ""  # text fields: the whole value must match this regular expression
    what: str = ""  # what `pattern` accepts, in words

    def allows(self, value: Any) -> bool:
        if self.pattern:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.exclusive else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, kind: str) -> str:
        if self.pattern:
            return self.what
        if self.choices:
            return "one of: " + ", ".join(str(c) for c in self.choices)
        if self.high is not None:
            return f"{kind} within [{_num(self.low)}, {_num(self.high)}]"
        return f"{kind} {'>' if self.exclusive else '>='} {_num(self.low)}"


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def at_least(minimum: float, *, exclusive: bool = False) -> dict[str, Rule]:
    return {RULE: Rule(low=minimum, exclusive=exclusive)}


def between(low: float, high: float) -> dict[str, Rule]:
    return {RULE: Rule(low=low, high=high)}


def one_of(*choices: Any) -> dict[str, Rule]:
    return {RULE: Rule(choices=tuple(choices))}


def matches(pattern: str, what: str) -> dict[str, Rule]:
    """A text field whose whole value matches `pattern`; `what` says what that is, for the
    message (`study.name must be a file name ..., got '../x'`)."""
    return {RULE: Rule(pattern=pattern, what=what)}


FILE_NAME = matches(
    r"(?!\.{1,2}$)[\w.+=@,-]+",
    "a file name (letters, digits and _.+=@,- ; no / and not . or ..)",
)


# -- checking -------------------------------------------------------------------------------------
def _kind(annotation: Any) -> str:
    text = str(annotation)
    if text.startswith(("int", "<class 'int'>")):
        return "an integer"
    if text.startswith(("float", "<class 'float'>")):
        return "a number"
    if text.startswith(("bool", "<class 'bool'>")):
        return "true or false"
    return "a value"


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # a forward reference this module cannot see
        return {f.name: f.type for f in dataclasses.fields(cls)}


def check(settings: Any, prefix: str = "") -> None:
    """Enforce every field's rule (and finite floats), recursing into nested settings."""
    hints = _hints(type(settings))
    for spec in dataclasses.fields(settings):
        value = getattr(settings, spec.name)
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        if dataclasses.is_dataclass(value):
            check(value, key)
            continue
        kind = _kind(hints.get(spec.name, spec.type))
        if isinstance(value, float) and not math.isfinite(value):
            raise NasError(f"{key} must be a finite number, got {value!r}")
        rule: Rule | None = spec.metadata.get(RULE)
        if rule is not None and value is not None and not rule.allows(value):
            raise NasError(f"{key} must be {rule.describe(kind)}, got {value!r}")


def rule_at(cls: type, path: list[str]) -> tuple[Rule | None, str]:
    """The rule and value kind of the field at `path` (keys) under the settings class `cls`."""
    for depth, name in enumerate(path):
        if not dataclasses.is_dataclass(cls):
            return None, "a value"
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            return None, "a value"
        annotation = _hints(cls).get(name, fields[name].type)
        if depth == len(path) - 1:
            return fields[name].metadata.get(RULE), _kind(annotation)
        cls = annotation if isinstance(annotation, type) else type(None)
    return None, "a value"


def fields_at(cls: type, path: list[str]) -> list[str]:
    """The field names of the settings class reached by `path` from `cls`."""
    for name in path:
        annotation = _hints(cls).get(name) if dataclasses.is_dataclass(cls) else None
        cls = annotation if isinstance(annotation, type) else type(None)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


_GIVEN = re.compile(r"Value '(.*)' (?:of type|is not)")


def explain(err: OmegaConfBaseException, schema: type, prefix: str = "") -> str:
    """One line for an OmegaConf type or key error raised while merging into `schema`."""
    key = str(getattr(err, "full_key", "") or getattr(err, "key", "") or "?")
    where = f"{prefix}.{key}" if prefix else key
    if isinstance(err, ConfigKeyError):
        parent = where.rpartition(".")[0]
        known = ", ".join(fields_at(schema, key.split(".")[:-1]))
        return f"unknown key '{where}'; '{parent or 'the command'}' has: {known}"
    msg = str(getattr(err, "msg", err)).splitlines()[0]
    if isinstance(err, ValidationError):
        rule, kind = rule_at(schema, re.sub(r"\[\d+\]", "", key).split("."))
        found = _GIVEN.search(msg)
        given = repr(found.group(1)) if found else "a value of another type"
        wanted = rule.describe(kind) if rule is not None else kind
        if wanted != "a value":
            return f"{where} must be {wanted}, got {given}"
    return f"{where}: {msg}"


def field_type(cls: type, path: list[str]) -> Any:
    """The annotation of the field at `path` under the settings class `cls` (None if absent)."""
    annotation: Any = cls
    for name in path:
        if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
            return None
        annotation = _hints(annotation).get(name)
    return annotation


def typed(cls: type[T], values: Mapping[str, Any], *, prefix: str = "") -> T:
    """`values` as an instance of the settings class `cls`: types converted, ranges checked."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(dict(values)))
        result = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise NasError(explain(err, cls, prefix)) from None
    check(result, prefix)
    return result  # type: ignore[return-value]
