"""Weight-only quantization: the torch weights we score are the weights ONNX Runtime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nas.cli import quiet_logs
from nas.compression.quantize import quantize_activations, quantize_dequantize


def _matmul_nbits(
    weight: torch.Tensor, bits: int, group: int, accuracy_level: int | None = None
) -> ort.InferenceSession:
    """A one-MatMul ONNX model (x @ weight.T) quantized by ONNX Runtime's MatMulNBits quantizer."""
    out_f, in_f = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, in_f])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, out_f])],
        [numpy_helper.from_array(weight.numpy().T.copy(), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with quiet_logs():
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            model, bits=bits, block_size=group, is_symmetric=True, accuracy_level=accuracy_level
        )
        quantizer.process()
    proto: onnx.ModelProto = quantizer.model.model
    assert [n.op_type for n in proto.graph.node] == ["MatMulNBits"]
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (4, 16), (8, 32), (8, 128)])
def test_scored_weights_equal_onnx_runtime_matmulnbits(bits: int, group: int) -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 80)  # 80 inputs: the last group is padded for 32 and 128
    x = torch.randn(3, 80)
    dequant = quantize_dequantize(weight, bits=bits, group_size=group)
    onnx_out = _matmul_nbits(weight, bits, group).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, (x @ dequant.T).numpy(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 128)])
def test_int8_activations_match_onnx_runtime_accuracy_level_4(bits: int, group: int) -> None:
    torch.manual_seed(4)
    weight = torch.randn(48, 80)
    x = torch.randn(3, 80) * torch.tensor([[0.1], [1.0], [5.0]])
    dequant = quantize_dequantize(weight, bits=bits, group_size=group)
    onnx_out = _matmul_nbits(weight, bits, group, 4).run(None, {"x": x.numpy()})[0]
    emulated = quantize_activations(x, block=group) @ dequant.T
    np.testing.assert_allclose(onnx_out, emulated.numpy(), atol=1e-4, rtol=1e-5)
    # ...and that is measurably not the weight-only product.
    assert np.abs(onnx_out - (x @ dequant.T).numpy()).max() > 1e-3


@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 64)])
def test_quantization_is_idempotent_and_bounded(bits: int, group: int) -> None:
    torch.manual_seed(1)
    weight = torch.randn(16, 128)
    once = quantize_dequantize(weight, bits=bits, group_size=group)
    # Re-quantizing an export of the scored model reproduces it exactly.
    assert torch.equal(quantize_dequantize(once, bits=bits, group_size=group), once)
    # Round to nearest: within one step (the grid [-2^(b-1), 2^(b-1) - 1] clips one end) and
    # half a step on average's order.
    groups = weight.reshape(16, -1, group)
    step = groups.abs().amax(-1, keepdim=True) / 2 ** (bits - 1)
    err = (once.reshape(16, -1, group) - groups).abs()
    assert bool((err <= step + 1e-6).all())
    assert (err / step).mean().item() < 0.3
    assert len(torch.unique(once.reshape(16, -1, group)[0, 0])) <= 2**bits
    assert not torch.equal(once, weight)


def test_fewer_bits_lose_more() -> None:
    torch.manual_seed(2)
    weight = torch.randn(64, 256)
    error = {
        (b, g): (quantize_dequantize(weight, bits=b, group_size=g) - weight).pow(2).mean().item()
        for b, g in [(8, 128), (4, 128), (4, 32)]
    }
    assert error[(8, 128)] < error[(4, 32)] < error[(4, 128)]


@pytest.mark.parametrize(("bits", "group"), [(3, 32), (4, 24), (8, 8)])
def test_unsupported_settings_are_refused(bits: int, group: int) -> None:
    with pytest.raises(ValueError):
        quantize_dequantize(torch.ones(4, 32), bits=bits, group_size=group)


@pytest.mark.slow
@pytest.mark.parametrize(("bits", "group"), [(4, 32), (8, 128)])
def test_exported_int_model_computes_what_was_scored(tmp_path, bits: int, group: int) -> None:
    """End to end: compress a model in torch, export its decode step, quantize the ONNX weights;
    ONNX Runtime's logits are the scored torch model's (the int weights are identical)."""
    from nas.arch import ArchConfig, Candidate, CompressionConfig
    from nas.compression import compress
    from nas.onnx.export import example_inputs, export_decode, quantize_onnx
    from nas.quality.models import build_model

    arch = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=96)
    candidate = Candidate(arch, CompressionConfig(weight_bits=bits, group_size=group))
    model = compress(build_model(arch, seed=3), candidate).model
    float_path = export_decode(model, tmp_path / "decode.onnx", context_len=8)
    quant_path = quantize_onnx(float_path, tmp_path / "q.onnx", bits=bits, group_size=group)
    session = ort.InferenceSession(str(quant_path), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "MatMulNBits" for n in onnx.load(str(quant_path)).graph.node)
    inputs = example_inputs(arch, "decode", length=8)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    logits = session.run(["logits"], feeds)[0]
    from nas.onnx.export import DecodeStep

    with torch.no_grad():
        expected = DecodeStep(model.eval())(*inputs)[0].numpy()
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)
