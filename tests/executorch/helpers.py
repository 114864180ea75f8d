"""What the ExecuTorch tests share: a tiny Llama, its formats, and the skip without the extra."""

from __future__ import annotations

import importlib.util

import pytest

from nas.arch import ArchConfig

INSTALL = "ExecuTorch is not installed: pip install -e '.[executorch]'"
needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None or importlib.util.find_spec("torchao") is None,
    reason=INSTALL,
)

# Two layers (the cache of more than one), grouped-query attention, and an FFN width (80) that is
# no multiple of int4's group of 32: down_proj stays float there, the rest is quantized.
TINY = ArchConfig(
    n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=80, vocab_size=300,
    tie_embeddings=False,
)  # fmt: skip
SEED = 3
CONTEXT = 16
FORMATS = {"fp32": (16, None), "int8": (8, None), "int4": (4, 32)}
# |Δlogit| of float rounding alone (these models' logits are below 1): what the same numerics give
EXACT = 1e-5
