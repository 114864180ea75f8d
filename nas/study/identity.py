"""Which settings are part of a study's identity, and why the others may change on a resume.

Every leaf key of the search's configuration belongs to one class, by the first rule below whose
pattern matches it (`fnmatch`, most specific first):

- `identity`: it changes a value the study stores (bits per byte, decode ms, memory MB,
  feasibility, which candidates exist), so a resume with another value would mix values that
  cannot be compared; `open_study` refuses it before anything is written;
- `varies`: it changes where, how fast or how long the search runs, which candidates it tries
  next, or how stored values are reported, never a stored value (the reason says why).

A new configuration key matches no rule and fails `tests/study/test_identity.py`, so that nobody
adds a setting without deciding which class it is. The identity itself holds the identity keys'
values (`settings_identity`), next to what the data and the search space resolve to.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

IDENTITY, VARIES = "identity", "varies"

RULES: tuple[tuple[str, str, str], ...] = (
    # (pattern, class, why)
    ("hardware.name", IDENTITY, "names the device every price is for"),
    ("hardware.description", VARIES, "text for people; the numbers are compared"),
    ("hardware.sources.*", VARIES, "where a number comes from, not the number"),
    ("hardware.energy.*", VARIES, "the energy estimate is printed by nas.predict, not stored"),
    ("hardware.runtime", VARIES, "a copy of runtime.name, which is identity"),
    ("hardware.*", IDENTITY, "prices decode ms, memory MB and feasibility"),
    ("search_space.*", IDENTITY, "which candidates exist"),
    ("budget.name", VARIES, "a label; the budget's numbers are compared where they act"),
    ("budget.n_trials", VARIES, "how many trials a run adds"),
    ("budget.timeout_s", VARIES, "how long a run may start trials"),
    ("budget.*", IDENTITY, "proxy length, caps, vocabulary, rungs: every stored quality"),
    ("proxy.early_stop.*", VARIES, "decides which trials finish, not what a finished trial scores"),
    ("proxy.*", IDENTITY, "the data, tokenizer, training run and scorer behind every bpb"),
    ("compression.*", IDENTITY, "how compressed models are scored (bpb after compression)"),
    ("sampler.*", VARIES, "which candidate is tried next, not what a tried one scores"),
    ("study.name", IDENTITY, "names the study (a new name is a new study)"),
    ("study.storage", VARIES, "where the study lives"),
    ("study.*", VARIES, "how many trials, processes, threads, retries and heartbeats"),
    ("target.*", VARIES, "judged when reported, from the stored rung curves"),
    ("runtime.*", IDENTITY, "decode ms and memory MB are priced by that runtime's calibration"),
    ("seed", IDENTITY, "initialises every proxy run and sets the paired seeds"),
    ("device", IDENTITY, "cuda trains in bf16: other numerics than the cpu's fp32"),
    ("runs_dir", VARIES, "where outputs go"),
    ("cache_dir", VARIES, "where caches go; their content is named by what made it"),
    ("quiet", VARIES, "a progress bar or log lines"),
)


def classify(key: str) -> tuple[str, str]:
    """(class, why) of a configuration key; KeyError for a key no rule covers."""
    for pattern, kind, why in RULES:
        if fnmatch.fnmatchcase(key, pattern):
            return kind, why
    raise KeyError(f"no identity rule covers the configuration key '{key}'")


def leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a settings object or mapping; lists are leaves."""
    if is_dataclass(node) and not isinstance(node, type):
        node = asdict(node)
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def settings_identity(settings: Any) -> dict[str, Any]:
    """The identity keys' values of `settings` (typed settings or a plain mapping)."""
    return {k: v for k, v in leaves(settings) if classify(k)[0] == IDENTITY and k != "study.name"}


# Identity settings added after studies existed, with the value every older study was priced
# with: a study stored before the key resumes when the key still has that value.
IMPLIED = {
    "runtime.name": "onnxruntime",
    "runtime.delegate": None,
    "proxy.distill_temperature": 2.0,
    "proxy.distill_weight": 1.0,
    "proxy.distill_lr": 3e-4,
    "compression.quant_format": "matmulnbits",  # ExecuTorch studies before it: ONNX Runtime's grid
}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two identities, one level into mappings; keys
    only one of them has are not compared (older studies lack newer keys)."""
    changed = []
    for key in sorted(set(stored) & set(current)):
        old, new = stored[key], current[key]
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            inner = [
                k
                for k in sorted(set(old) | set(new))
                if old.get(k, IMPLIED.get(k)) != new.get(k, IMPLIED.get(k))
            ]
            changed += [f"{key}: {k}" if key != "settings" else k for k in inner]
        else:
            changed.append(key)
    return changed
