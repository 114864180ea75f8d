"""Weight-only integer ONNX models that hold exactly the weights `nas.compression.quantize` scored.

ONNX Runtime's `MatMulNBitsQuantizer` with the same bits, block size and symmetric grid as the
torch side; it is idempotent on its own grid, so quantizing an export of the already-quantized
torch model reproduces those weights. The LM head stays float (see `predictors.footprint`). Unlike
`nas.onnx_export.quantize_onnx`'s int8 (dynamic quantization: activations become int8 too),
int8 here is weight-only MatMulNBits, the format whose quality the trial measured.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """The quantizer module calls logging.basicConfig(INFO) on import and logs every node."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        root.handlers[:] = handlers
        root.setLevel(level)


def quantize_onnx_weights(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int,
    group_size: int,
    accuracy_level: int | None = None,
) -> Path:
    """Write `dst`: `src` with every constant-weight MatMul but the LM head as MatMulNBits.

    `accuracy_level=4` lets ONNX Runtime quantize the activations to int8 on the fly (faster
    integer kernels, different numerics from the weight-only model that was scored); the default
    computes in fp32 with exactly the scored weights.
    """
    import onnx

    from nas.onnx_export import lm_head_nodes  # the predictor's export keeps the same head

    with _root_logging_kept():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        model = onnx.load(str(src))
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=bits,
            block_size=group_size,
            is_symmetric=True,
            accuracy_level=accuracy_level,
            nodes_to_exclude=lm_head_nodes(model),
        )
        quantizer.process()
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return Path(dst)
