"""`model.onnx` of an exported model: the full forward pass, checked in ONNX Runtime.

The graph maps `input_ids` [batch, sequence] (both dynamic) to `logits` [batch, sequence, vocab],
without a KV cache: it is for checking on the device that the architecture loads and runs (latency
is measured with decode/prefill graphs by `nas.onnx.export`). Mixture-of-experts layers are
exported with `transformers`' `batched_mm` expert kernel, which gathers each token's experts
(the default grouped-GEMM kernel has no ONNX form); it computes the same function.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

log = logging.getLogger(__name__)

EXPORT_EXPERTS = "batched_mm"
TOLERANCE = 1e-3  # max |logit difference| between ONNX Runtime and torch, fp32


class _Logits(torch.nn.Module):
    """input_ids -> logits, without cache or extra outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


@contextlib.contextmanager
def _exportable_experts(model: torch.nn.Module) -> Iterator[None]:
    config = model.config
    previous = getattr(config, "_experts_implementation", None)
    moe = getattr(config, "num_experts", 0) > 1
    if moe:
        config._experts_implementation = EXPORT_EXPERTS
    try:
        yield
    finally:
        if moe:
            config._experts_implementation = previous


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """torch.export (ONNX's dynamo exporter, ExecuTorch's lowering) prints progress lines,
    warnings and log records; keep them out of the commands' output."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def write_onnx(model: torch.nn.Module, out_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Export `model` to `out_dir/model.onnx`, run it in ONNX Runtime and compare with torch.

    Returns:
        The check: ONNX Runtime version, the input shapes tried and the largest logit difference.
    """
    model = model.float().eval()
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    # Batch 2 while tracing: an example of size 1 would specialise the batch dimension to 1.
    example = torch.randint(0, vocab, (2, 8), generator=gen)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    path = out_dir / "model.onnx"
    with _exportable_experts(model), torch.no_grad(), quiet_export():
        program = torch.onnx.export(
            _Logits(model),
            (example,),
            dynamo=True,
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}},
            optimize=True,
        )
        program.save(str(path), external_data=False)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 0.0
        shapes = [(1, 5), (3, 12)]
        for shape in shapes:
            ids = torch.randint(0, vocab, shape, generator=gen)
            expected = model(input_ids=ids, use_cache=False).logits.numpy()
            (got,) = session.run(["logits"], {"input_ids": ids.numpy()})
            if got.shape != expected.shape:
                raise RuntimeError(f"model.onnx returned shape {got.shape}, torch {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
    if worst > TOLERANCE:
        raise RuntimeError(f"model.onnx disagrees with torch by {worst:.2g} in the logits")
    log.info("model.onnx runs in ONNX Runtime %s (max |Δlogit| %.1e)", ort.__version__, worst)
    return {
        "onnxruntime": ort.__version__,
        "shapes": [list(s) for s in shapes],
        "max_abs_logit_diff": worst,
    }
