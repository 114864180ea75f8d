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
