"""What a search-space choice list may hold, checked once when a space is built: every sample
is valid by construction only if every choice is."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas.arch import PRUNE_METHODS, QUANT_METHODS
from nas.errors import NasError

SPARSITY_CHOICES = {
    "none": (0.0, "none"),
    "unstructured50": (0.5, "unstructured"),
    "2:4": (0.5, "2:4"),
}


@dataclass(frozen=True)
class Choices:
    """What one parameter's choices must be: of one kind, each passing `check` (said by `rule`)."""

    kind: type  # int, float (any finite number), bool or str
    check: Callable[[Any], bool] = lambda value: True
    rule: str = ""

    def accepts(self, value: Any) -> bool:
        if self.kind is float:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            return number and math.isfinite(value) and self.check(value)
        if self.kind is int and isinstance(value, bool):
            return False
        return isinstance(value, self.kind) and self.check(value)


def count() -> Choices:
    return Choices(int, lambda v: v >= 1, "integers >= 1")


def fraction() -> Choices:
    """A share of a parent's units that a child keeps."""
    return Choices(float, lambda v: 0 < v <= 1, "numbers in (0, 1]")


# The compression choices every space offers (nas.compression applies them).
COMPRESSION_RULES = {
    "weight_bits": Choices(int, lambda v: v in (16, 8, 4), "16, 8 or 4"),
    # ONNX Runtime's MatMulNBits (the quantizer that scores and runs 8/4-bit weights).
    "group_size": Choices(int, lambda v: v >= 16 and not v & (v - 1), "powers of two >= 16"),
    "sparsity": Choices(
        str, lambda v: v in SPARSITY_CHOICES, "any of " + ", ".join(SPARSITY_CHOICES)
    ),
    # How 8/4-bit weights are chosen and which weights sparsity zeroes (nas.compression).
    "quant_method": Choices(
        str, lambda v: v in QUANT_METHODS, "any of " + ", ".join(QUANT_METHODS)
    ),
    "prune_method": Choices(
        str, lambda v: v in PRUNE_METHODS, "any of " + ", ".join(PRUNE_METHODS)
    ),
    # Bits stored with one scale per output channel: only ExecuTorch's XNNPACK int8.
    "per_channel_bits": Choices(int, lambda v: v == 8, "8 (XNNPACK's int8)"),
}


def checked(key: str, values: Any, rules: Mapping[str, Choices]) -> list[Any]:
    """The choices given for `key` as a list (a single value is one choice); a `NasError`
    naming the key and the rule for anything else."""
    if isinstance(values, str | int | float | bool):
        values = [values]
    if not isinstance(values, Sequence):
        raise NasError(f"search_space.{key} must be a list of choices, got {values!r}")
    rule = rules[key]
    bad = [v for v in values if not rule.accepts(v)]
    if bad:
        raise NasError(
            f"search_space.{key}: {bad[0]!r} unsupported; its choices must be {rule.rule}"
        )
    if not values:
        raise NasError(f"search_space.{key} has no choice; give at least one")
    return list(values)
