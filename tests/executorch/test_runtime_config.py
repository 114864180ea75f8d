"""The `runtime` config group: onnxruntime by default, executorch with XNNPACK, nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nas.config.compose import load_settings
from nas.errors import NasError


def test_onnxruntime_is_the_default_and_executorch_takes_xnnpack() -> None:
    default = load_settings(["budget=smoke"]).runtime
    assert (default.name, default.delegate) == ("onnxruntime", None)
    chosen = load_settings(["budget=smoke", "runtime=executorch"]).runtime
    assert (chosen.name, chosen.delegate) == ("executorch", "xnnpack")


def test_each_runtime_scores_int8_int4_in_its_own_numerics() -> None:
    default = load_settings(["budget=smoke"])
    assert default.compression.quant_format == "matmulnbits"
    assert default.search_space["quant_method"] == ["rtn", "gptq", "awq"]
    executorch = load_settings(["budget=smoke", "runtime=executorch"])
    assert executorch.compression.quant_format == "xnnpack"
    assert executorch.compression.int8_activations is True
    assert executorch.search_space["quant_method"] == ["rtn"]  # the group narrows the space


def test_an_executorch_study_differs_from_one_scored_before_its_numerics() -> None:
    from nas.study.identity import differences, settings_identity

    now = settings_identity(load_settings(["budget=smoke", "runtime=executorch"]))
    before = {k: v for k, v in now.items() if k != "compression.quant_format"}
    before["search_space.quant_method"] = ["rtn", "gptq", "awq"]
    assert "compression.quant_format" in differences({"settings": before}, {"settings": now})
    ort = settings_identity(load_settings(["budget=smoke"]))
    older = {k: v for k, v in ort.items() if k != "compression.quant_format"}
    assert differences({"settings": older}, {"settings": ort}) == []


def test_the_runtime_is_no_part_of_the_study_name() -> None:
    names = {load_settings(["budget=smoke", f"runtime={r}"]).study.name
             for r in ("onnxruntime", "executorch")}  # fmt: skip
    assert names == {"pixel8-slm-smoke"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["runtime=bogus"], "unknown runtime 'bogus'; choose one of: executorch, onnxruntime"),
        (["runtime.name=tflite"], "runtime.name must be one of: onnxruntime, executorch, got"),
        (["runtime=executorch", "runtime.delegate=vulkan"], "runtime.delegate must be one of"),
        (["runtime=executorch", "runtime.delegate=null"],
         "runtime.delegate=null does not go with runtime=executorch; use runtime.delegate=xnnpack"),
        (["runtime.delegate=xnnpack"],
         "runtime.delegate=xnnpack does not go with runtime=onnxruntime; leave runtime.delegate"),
        (["runtime.threads=2"], "unknown key 'runtime.threads'; 'runtime' has: name, delegate"),
        (["runtime=executorch", "search_space.quant_method=[rtn,awq]"],
         "search_space.quant_method=awq chooses weights on ONNX Runtime's grid, not XNNPACK's"),
        (["runtime=executorch", "compression.int8_activations=false"],
         "compression.int8_activations=false is ONNX Runtime's weight-only format"),
        (["compression.quant_format=xnnpack"],
         "compression.quant_format=xnnpack is not what runtime=onnxruntime runs (matmulnbits)"),
        (["runtime=executorch", "compression.quant_format=matmulnbits"],
         "compression.quant_format=matmulnbits is not what runtime=executorch runs (xnnpack)"),
        (["compression.quant_format=int8"], "compression.quant_format must be one of: matmulnbits"),
    ],
)  # fmt: skip
def test_bad_runtime_values_are_one_line_errors(override: list[str], expected: str) -> None:
    with pytest.raises(NasError) as err:
        load_settings(["budget=smoke", *override])
    assert str(err.value).startswith(expected), str(err.value)
    assert "\n" not in str(err.value)


def test_search_cli_refuses_a_bogus_runtime_like_a_bogus_hardware() -> None:
    lines = {}
    for override in ("runtime=bogus", "hardware=bogus"):
        run = subprocess.run(
            [sys.executable, "-m", "nas.search", "budget=smoke", override],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().count("\n") == 0, run.stderr
        lines[override] = run.stderr.strip()
    assert lines["runtime=bogus"].startswith("error: unknown runtime 'bogus'; choose one of: ")
    assert lines["hardware=bogus"].startswith("error: unknown hardware 'bogus'; choose one of: ")
