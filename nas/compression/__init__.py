"""Compression of proxy-trained models: weight-only quantization, sparsity, structured pruning.

`compress` applies a candidate's compression to its trained model and returns the compressed
model, its (possibly smaller) architecture and the recipe; `score_compressed` is what a trial
calls after proxy training. NNI is imported only by `nas.compression.nni_backend`.
"""

from __future__ import annotations

from nas.compression.apply import (
    Compressed,
    CompressionSettings,
    StructuredSpec,
    compress,
    plan,
    score_compressed,
)
from nas.compression.recipe import Recipe

__all__ = [
    "Compressed",
    "CompressionSettings",
    "Recipe",
    "StructuredSpec",
    "compress",
    "plan",
    "score_compressed",
]
