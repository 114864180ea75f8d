"""Mixture of experts as ONNX Runtime runs it: one fused MoE node per block, QMoE when quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nas.arch import ArchConfig
from nas.onnx.export import DecodeStep, PrefillStep, example_inputs, export_graph, quantize_onnx
from nas.onnx.moe_op import ort_moe
from nas.onnx.qmoe import ATTRIBUTES, block_for, pack, quantize_moe_nodes
from nas.quality.models import build_model
from tests.onnx.helpers import op_counts, run

# Widths that hold whole groups of 16 (d_model 16, ffn 32).
MOE = ArchConfig(
    n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=32, vocab_size=300,
    n_experts=4, experts_per_token=2,
)  # fmt: skip
RAGGED = ArchConfig(
    n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=24, vocab_size=300,
    n_experts=4, experts_per_token=1,
)  # fmt: skip
CONTEXT = 16


def _args(arch: ArchConfig, phase: str) -> tuple[torch.Tensor, ...]:
    if phase == "prefill":
        return (torch.randint(0, arch.vocab_size, (1, 8), generator=torch.Generator()),)
    return example_inputs(arch, "decode", length=CONTEXT)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    model = build_model(MOE, seed=3).eval()
    folder = tmp_path_factory.mktemp("moe")
    out = {}
    for phase in ("decode", "prefill"):
        length = CONTEXT if phase == "decode" else 8
        path = export_graph(model, folder / f"{phase}.onnx", phase=phase, length=length)
        out[phase] = (model, path)
    return out


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_the_operator_form_computes_what_the_model_computes(phase: str) -> None:
    model = build_model(MOE, seed=2).eval()
    step = DecodeStep(model) if phase == "decode" else PrefillStep(model)
    args = _args(MOE, phase)
    with torch.no_grad():
        expected = step(*args)[0]
        with ort_moe(model):
            swapped = step(*args)[0]
    torch.testing.assert_close(swapped, expected, atol=1e-5, rtol=1e-4)
    assert type(model.model.layers[0].mlp).__name__ == "Qwen3MoeSparseMoeBlock"  # put back


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_each_moe_block_is_one_moe_node_with_the_models_logits(graphs, phase: str) -> None:
    model, path = graphs[phase]
    assert op_counts(path)["MoE"] == MOE.n_moe_layers
    args = _args(MOE, phase)
    step = DecodeStep(model) if phase == "decode" else PrefillStep(model)
    with torch.no_grad():
        expected = step(*args)[0].numpy()
    np.testing.assert_allclose(run(path, args)[0], expected, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_experts_are_qmoe_nodes_in_the_blocks_format(graphs, tmp_path, bits) -> None:
    _, path = graphs["decode"]
    out = quantize_onnx(path, tmp_path / f"q{bits}.onnx", bits=bits, group_size=16)
    counted = op_counts(out)
    assert counted["QMoE"] == MOE.n_moe_layers and counted["MoE"] == 0
    assert counted["MatMulNBits"] > 0  # attention and routers, beside the experts
    model = onnx.load(str(out))
    node = next(n for n in model.graph.node if n.op_type == "QMoE")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["expert_weight_bits"] == bits and attrs["block_size"] == 16
    # The float experts are gone: the file holds them in `bits` bits.
    assert not any(t.name.endswith(("mlp.fc1", "mlp.fc2")) for t in model.graph.initializer)
    args = _args(MOE, "decode")
    float_logits, quant_logits = run(path, args)[0], run(out, args)[0]
    assert np.corrcoef(float_logits.ravel(), quant_logits.ravel())[0, 1] > 0.95
    assert out.stat().st_size < path.stat().st_size


def test_experts_whose_widths_hold_no_group_stay_float(tmp_path: Path) -> None:
    path = export_graph(RAGGED, tmp_path / "d.onnx", phase="decode", length=CONTEXT)
    out = quantize_onnx(path, tmp_path / "q.onnx", bits=4, group_size=16)
    assert op_counts(out)["MoE"] == RAGGED.n_moe_layers and op_counts(out)["QMoE"] == 0


def test_block_is_the_largest_power_of_two_both_widths_hold() -> None:
    assert block_for(256, 512, 128) == 128
    assert block_for(192, 384, 128) == 64  # 192 holds no group of 128
    assert block_for(128, 344, 32) is None  # 344 = 8 x 43: not even 16


def _unpack(codes: np.ndarray, scales: np.ndarray, bits: int, cols: int) -> np.ndarray:
    if bits == 4:
        codes = np.stack([codes & 15, codes >> 4], axis=-1).reshape(*codes.shape[:2], cols)
    values = codes.astype(np.float32) - 2 ** (bits - 1)
    scales = scales if scales.ndim == 3 else scales[..., None]  # per channel: one group
    group = cols // scales.shape[-1]
    return (values.reshape(*codes.shape[:2], -1, group) * scales[..., None]).reshape(values.shape)


def _moe_model(fc1: np.ndarray, fc2: np.ndarray, k: int) -> onnx.ModelProto:
    experts, _, d_model = fc1.shape
    node = helper.make_node(
        "MoE", ["x", "logits", "fc1", "", "fc2"], ["y"], domain="com.microsoft", k=k, **ATTRIBUTES
    )
    graph = helper.make_graph(
        [node],
        "moe",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, d_model]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, experts]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, d_model])],
        initializer=[numpy_helper.from_array(fc1, "fc1"), numpy_helper.from_array(fc2, "fc2")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(("bits", "group"), [(8, 16), (4, 16), (8, None)])
def test_qmoe_computes_with_exactly_the_packed_weights(bits: int, group: int | None) -> None:
    """Layout check: ONNX Runtime's QMoE on our packing equals its float MoE on the same weights
    dequantized by hand (int4 at fp32 compute: exact; int8 always quantizes activations). No
    group: one scale per output channel (the dynamic int8 method)."""
    rng = np.random.default_rng(0)
    experts, d_model, ffn, k = 4, 32, 64, 2
    fc1 = rng.standard_normal((experts, 2 * ffn, d_model)).astype(np.float32) * 0.1
    fc2 = rng.standard_normal((experts, d_model, ffn)).astype(np.float32) * 0.1
    x = rng.standard_normal((3, d_model)).astype(np.float32)
    logits = rng.standard_normal((3, experts)).astype(np.float32)
    quantized = _moe_model(fc1, fc2, k)
    assert quantize_moe_nodes(quantized, bits=bits, group_size=group, accuracy_level=None) == 1
    by_hand = [_unpack(*pack(w, bits, group), bits, w.shape[2]) for w in (fc1, fc2)]
    want = run(_moe_model(*by_hand, k).SerializeToString(), (x, logits))[0]
    got = run(quantized.SerializeToString(), (x, logits))[0]
    tolerance = 1e-5 if bits == 4 else 0.02 * np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=tolerance)
    # And the packing is within half a step of the float weights.
    for w, back in zip((fc1, fc2), by_hand, strict=True):
        step = np.abs(w).max() / (2 ** (bits - 1) - 1)  # the largest scale any group has
        assert np.abs(back - w).max() <= step / 2 + 1e-6
