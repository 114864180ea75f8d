"""A pretrained parent and the children pruned out of it (issue 17, Minitron-style).

- `load`: `Parent` (a local Hugging Face checkpoint: shape, fingerprint, tokenizer),
  `load_parent` (light checks, no torch), `parent_model` (its weights);
- `scores`: `importance`, the activation importance of layers, heads, FFN channels and experts
  on calibration text, cached;
- `child`: `child_model` (the parent's own class, shaped as a child `ArchConfig`, holding the
  most important kept weights) and `child_config`.

`from nas.parent import load_parent` imports no torch: the settings check refuses a bad parent
before torch loads; the rest loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.parent.load import Parent, load_parent, parent_model

if TYPE_CHECKING:
    from nas.parent.child import child_config, child_model
    from nas.parent.scores import Importance, importance

__all__ = [
    "Importance",
    "Parent",
    "child_config",
    "child_model",
    "importance",
    "load_parent",
    "parent_model",
]
_LAZY = {
    "Importance": "nas.parent.scores",
    "importance": "nas.parent.scores",
    "child_config": "nas.parent.child",
    "child_model": "nas.parent.child",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas.parent' has no attribute {name!r}")
