"""ONNX export of real `transformers` models: same logits as PyTorch, quantizers applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.errors import NasError
from nas.onnx.export import (
    DecodeStep,
    PrefillStep,
    example_inputs,
    export_candidate,
    export_graph,
    lm_head_nodes,
    quantize_onnx,
)
from nas.onnx.moe import exportable_moe
from nas.quality.models import build_model
from tests.onnx.helpers import op_counts, run

DENSE = ArchConfig(
    n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=48, vocab_size=300,
    tie_embeddings=False,
)  # fmt: skip
MOE = ArchConfig(
    n_layers=2, n_heads=2, n_kv_heads=1, head_dim=8, ffn_dim=24, vocab_size=300,
    n_experts=4, experts_per_token=2,
)  # fmt: skip
CONTEXT = 16


@pytest.fixture(scope="module")
def dense_decode(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = build_model(DENSE, seed=1).eval()
    path = tmp_path_factory.mktemp("onnx") / "decode.onnx"
    export_graph(model, path, phase="decode", length=CONTEXT)
    return model, path


def test_decode_graph_matches_pytorch_logits_and_cache(dense_decode) -> None:
    model, path = dense_decode
    args = example_inputs(DENSE, "decode", length=CONTEXT)
    with torch.no_grad():
        expected = DecodeStep(model)(*args)
    got = run(path, args)
    assert got[0].shape == (1, 1, DENSE.vocab_size)
    np.testing.assert_allclose(got[0], expected[0].numpy(), atol=1e-4)
    # The cache grows by the new token in every layer: [1, kv_heads, context, head_dim].
    assert len(got) == 1 + 2 * DENSE.n_layers
    assert got[1].shape == (1, DENSE.n_kv_heads, CONTEXT, DENSE.head_dim)
    np.testing.assert_allclose(got[-1], expected[-1].numpy(), atol=1e-4)


@pytest.mark.parametrize(
    ("bits", "method", "op"),
    [(8, "nbits", "MatMulNBits"), (4, "nbits", "MatMulNBits"), (8, "dynamic", "MatMulInteger")],
)
def test_quantization_replaces_block_matmuls_but_keeps_the_lm_head(
    dense_decode, tmp_path: Path, bits: int, method: str, op: str
) -> None:
    _, path = dense_decode
    out = quantize_onnx(path, tmp_path / f"q{bits}.onnx", bits=bits, group_size=16, method=method)
    counted = op_counts(out)
    # 7 linear layers per block (q, k, v, o, gate, up, down) are quantized.
    assert counted[op] == 7 * DENSE.n_layers
    head = lm_head_nodes(onnx.load(str(out)))
    assert len(head) == 1
    assert next(n for n in onnx.load(str(out)).graph.node if n.name == head[0]).op_type == "MatMul"
    args = example_inputs(DENSE, "decode", length=CONTEXT)
    float_logits, quant_logits = run(path, args)[0], run(out, args)[0]
    assert np.corrcoef(float_logits.ravel(), quant_logits.ravel())[0, 1] > 0.95
    assert out.stat().st_size < path.stat().st_size


def test_quantize_rejects_unsupported_settings(dense_decode, tmp_path: Path) -> None:
    _, path = dense_decode
    with pytest.raises(NasError, match="8 and 4 bits"):
        quantize_onnx(path, tmp_path / "q.onnx", bits=2, group_size=32)
    with pytest.raises(NasError, match="method 'dynamic' unknown for 4 bits"):
        quantize_onnx(path, tmp_path / "q.onnx", bits=4, group_size=32, method="dynamic")
    with pytest.raises(NasError, match="power of two"):
        quantize_onnx(path, tmp_path / "q.onnx", bits=4, group_size=24)


@pytest.mark.parametrize("phase", ["decode", "prefill"])
def test_exportable_moe_kernel_is_equivalent(phase: str) -> None:
    model = build_model(MOE, seed=2).eval()
    length = CONTEXT if phase == "decode" else 8
    args = example_inputs(MOE, phase, length=length)
    if phase == "prefill":
        args = (torch.randint(0, MOE.vocab_size, (1, length), generator=torch.Generator()),)
    step = DecodeStep(model) if phase == "decode" else PrefillStep(model)
    with torch.no_grad():
        expected = step(*args)[0]
        with exportable_moe(model, phase):
            swapped = step(*args)[0]
    torch.testing.assert_close(swapped, expected, atol=1e-5, rtol=1e-4)
    # The original kernel is back afterwards.
    assert type(model.model.layers[0].mlp.experts).__name__ == "Qwen3MoeExperts"


@pytest.mark.slow
def test_moe_candidate_exports_and_runs(tmp_path: Path) -> None:
    candidate = Candidate(MOE, CompressionConfig(weight_bits=4, group_size=16))
    exported = export_candidate(candidate, tmp_path, context_len=CONTEXT, prompt_len=8)
    assert op_counts(exported.decode)["MatMulNBits"] > 0
    assert op_counts(exported.decode)["MoE"] == MOE.n_moe_layers  # ffn 24 holds no group of 16
    got = run(exported.prefill, (torch.zeros(1, 8, dtype=torch.long),))
    assert got[0].shape == (1, 1, MOE.vocab_size)
    assert np.isfinite(got[0]).all()


def test_export_rejects_bad_dtype(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="dtype"):
        export_graph(DENSE, tmp_path / "x.onnx", phase="decode", length=8, dtype="bf8")


@pytest.mark.parametrize("processor, a8", [("cpu", None), ("cpu", False)])
def test_int8_graphs_use_the_runtimes_fast_int8_compute_on_cpus(
    tmp_path: Path, processor: str, a8: bool | None
) -> None:
    """On CPUs int8/int4 MatMulNBits run with accuracy_level=4 (int8 activations) unless
    weight-only is asked for; the two formats get different file names (no stale reuse)."""
    arch = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=64)
    candidate = Candidate(arch, CompressionConfig(weight_bits=8, group_size=16))
    exported = export_candidate(
        candidate, tmp_path, context_len=8, prompt_len=4, processor=processor, int8_activations=a8
    )
    levels = {
        attr.i
        for node in onnx.load(str(exported.decode)).graph.node
        if node.op_type == "MatMulNBits"
        for attr in node.attribute
        if attr.name == "accuracy_level"
    }
    assert levels == {4} if a8 is None else levels <= {0}  # unset is 0: float compute
    expected = "decode-int8g16a8.onnx" if a8 is None else "decode-int8g16.onnx"
    assert exported.decode.name == expected
