"""Reading and running exported ONNX graphs, shared by the ONNX tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def op_counts(path: Path) -> Counter[str]:
    """How many nodes of each operator type the graph at `path` has."""
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def run(model: Path | bytes, args) -> list[np.ndarray]:
    """Every output of a graph (a file, or serialised bytes) on `args`, in input order."""
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"]
    )
    feeds = {i.name: np.asarray(a) for i, a in zip(session.get_inputs(), args, strict=True)}
    return session.run(None, feeds)
