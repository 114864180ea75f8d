"""Timing a program in its own process: positive, ordered figures and the conditions they hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.executorch.measure import Measurement, main, measure_isolated, measure_program
from tests.executorch.helpers import needs_executorch

pytestmark = needs_executorch


@pytest.mark.parametrize("name", ["fp32", "int4"])
def test_isolated_measurement_is_sane(name: str, programs) -> None:
    m = measure_isolated(programs[name], threads=2, warmup=3, runs=20)
    assert isinstance(m, Measurement) and m.model == str(programs[name])
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms and m.mean_ms > 0
    assert m.runs == len(m.times_ms) == 20 and m.warmup == 3
    assert m.threads == 2 and m.delegate == "xnnpack" and m.executorch_version.startswith("1.5")
    assert m.baseline_mb > 50 and m.peak_mb >= 0 and m.load_s > 0
    assert m.spread >= 0


def test_threads_and_pinning_reach_the_child(programs) -> None:
    m = measure_isolated(programs["int8"], threads=1, runs=5, cpus=[0])
    assert m.threads == 1 and m.affinity == [0]


def test_in_process_measurement_stops_at_max_seconds_with_at_least_5_runs(programs) -> None:
    m = measure_program(programs["fp32"], threads=1, warmup=1, runs=10_000, max_seconds=0.0)
    assert m.runs == 5 and m.median_ms > 0


def test_module_prints_one_json_line(programs) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "nas.executorch.measure", str(programs["fp32"]), "threads=1",
         "runs=5", "warmup=1"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["median_ms"] > 0 and data["threads"] == 1 and "times_ms" not in data


def test_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "none.pte")]) == 2
    assert "no program file" in capsys.readouterr().err


def test_a_file_that_is_no_program_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(RuntimeError, match=r"measuring .*bad\.pte failed"):
        measure_isolated(bad, threads=1, runs=5)
