"""ONNX Runtime timing and memory of a real exported graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nas.onnx.measure import measure_isolated, measure_session

N = 256


@pytest.fixture(scope="module")
def matmul_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x[1,N] @ W[N,N] with a 256 KiB fp32 weight."""
    import numpy as np

    weight = numpy_helper.from_array(np.ones((N, N), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("m") / "mm.onnx"
    onnx.save(model, str(path))
    return path


def test_measure_session_reports_ordered_percentiles(matmul_model: Path) -> None:
    m = measure_session(matmul_model, threads=1, warmup=2, runs=20)
    assert m.runs == 20 and len(m.times_ms) == 20
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.threads == 1 and m.affinity
    assert m.spread >= 0


def test_measure_isolated_runs_in_a_fresh_process_and_sees_memory(matmul_model: Path) -> None:
    m = measure_isolated(matmul_model, threads=1, warmup=1, runs=5, cpus=[0])
    assert m.runs == 5
    assert m.affinity == [0]
    assert m.baseline_mb > 0 and m.peak_mb >= 0


def test_runner_cli_prints_one_json_line(matmul_model: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nas.onnx.measure", str(matmul_model), "threads=1", "runs=3"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(out.stdout)
    assert data["runs"] == 3 and "times_ms" not in data


def test_measure_isolated_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no model file"):
        measure_isolated(tmp_path / "absent.onnx", threads=1)
