"""A pretrained parent and the children pruned out of it (issue 17, Minitron-style).

- `load`: `Parent` (a local Hugging Face checkpoint: shape, fingerprint, tokenizer),
  `load_parent` (light checks, no torch), `parent_model` (its weights);
- `importance`: activation importance of layers, heads, FFN channels and experts on calibration
  text, cached;
- `child`: `child_model` (the parent's own class, shaped as a child `ArchConfig`, holding the
  most important kept weights) and `child_config`.
"""

from __future__ import annotations

from nas.parent.child import child_config, child_model
from nas.parent.importance import Importance, importance
from nas.parent.load import Parent, load_parent, parent_model

__all__ = [
    "Importance",
    "Parent",
    "child_config",
    "child_model",
    "importance",
    "load_parent",
    "parent_model",
]
