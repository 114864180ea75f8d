"""Weight-only integer quantization (int8 / int4, one scale per `group_size` input weights).

The quantization itself is ONNX Runtime's: the same C++ round-to-nearest block quantizer that its
`MatMulNBitsQuantizer` runs when the deployed ONNX model is quantized (`quantize_matmul_4bits` /
`_8bits`, symmetric, blocks along the input dimension). Applying it here to the trained torch
weights and writing back the dequantized values gives the exact weights the device runs (the
quantizer is idempotent on its own grid, tests/test_compression_quantize.py checks it against
ONNX Runtime's MatMulNBits kernel), so the bits per byte we score is the deployed model's.

Why not a torch library: torchao 0.18 works on torch 2.13 (IntxWeightOnlyConfig, PerGroup), but
its symmetric grid (scale = max|w| / 7.5) differs from ONNX Runtime's (scale = signed extremum /
-8), so the scored weights would not be the shipped ones. Only the unpacking of ONNX Runtime's
packed nibbles is written here.
"""

from __future__ import annotations

import numpy as np
import torch

# The kernels behind onnxruntime.quantization.matmul_nbits_quantizer. That module is not imported:
# importing it calls logging.basicConfig(level=INFO) on the root logger.
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

from nas.compression.matrices import Matrix

KERNELS = {4: quantize_matmul_4bits, 8: quantize_matmul_8bits}


def quantize_dequantize(weight: torch.Tensor, *, bits: int, group_size: int) -> torch.Tensor:
    """`weight` [out, in] rounded to `bits`-bit integers with one scale per `group_size` inputs,
    returned dequantized (float32, same shape)."""
    if bits not in KERNELS:
        raise ValueError(f"weight-only quantization supports 8 or 4 bits, got {bits}")
    if group_size < 16 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= 16, got {group_size}")
    # ONNX Runtime quantizes B of `x @ B`: [K=in, N=out], blocks of `group_size` along K.
    b = np.ascontiguousarray(weight.detach().float().cpu().numpy().T)
    rows, cols = b.shape
    k_blocks = -(-rows // group_size)
    if k_blocks * group_size != rows:
        b = np.pad(b, ((0, k_blocks * group_size - rows), (0, 0)))
    per_byte = 8 // bits
    packed = np.zeros((cols, k_blocks, group_size // per_byte), dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=np.float32)
    zero_points = np.zeros((cols, -(-k_blocks // per_byte)), dtype=np.uint8)
    KERNELS[bits](packed, b, scales, zero_points, group_size, cols, rows, True)
    codes = _unpack(packed, bits).astype(np.float32)  # [N, k_blocks, group_size]
    offset = 2 ** (bits - 1)  # symmetric: the implicit zero point
    values = (codes - offset) * scales[:, :, None]
    dequant = values.reshape(cols, k_blocks * group_size)[:, :rows]  # [N, K] = [out, in]
    return torch.from_numpy(np.ascontiguousarray(dequant))


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    low, high = packed & 0x0F, packed >> 4  # element 2j sits in the low nibble
    return np.stack([low, high], axis=-1).reshape(*packed.shape[:-1], -1)


@torch.no_grad()
def quantize_matrices(matrices: list[Matrix], *, bits: int, group_size: int) -> None:
    """Replace every matrix with its `bits`-bit round-to-nearest version, in place."""
    for matrix in matrices:
        matrix.set(quantize_dequantize(matrix.get(), bits=bits, group_size=group_size))


def quantize_activations(x: torch.Tensor, *, block: int) -> torch.Tensor:
    """`x` as ONNX Runtime's MatMulNBits sees it at `accuracy_level=4`: int8, symmetric, one scale
    (max|x| / 127) per `block` consecutive input features of each row (checked against the kernel
    in tests/test_compression_quantize.py). ONNX Runtime exposes no function for this step, so it
    is written here."""
    k = x.shape[-1]
    pad = -k % block
    padded = torch.nn.functional.pad(x, (0, pad)) if pad else x
    blocks = padded.reshape(*padded.shape[:-1], -1, block)
    scale = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127.0
    codes = torch.round(blocks / scale).clamp(-127, 127)
    return (codes * scale).reshape(padded.shape)[..., :k].to(x.dtype)


def int8_activation_hooks(model: torch.nn.Module, *, block: int) -> list:
    """Quantize the inputs of every `nn.Linear` inside the decoder blocks (the MatMuls the ONNX
    quantizer turns into MatMulNBits); returns the hook handles."""

    def pre_hook(_module, args):
        return (quantize_activations(args[0], block=block), *args[1:])

    return [
        module.register_forward_pre_hook(pre_hook)
        for module in model.model.layers.modules()
        if isinstance(module, torch.nn.Linear)
    ]
