"""`python -m nas.bench train` at a tiny size: every switch runs against its plain counterpart,
per seed, and the table reads each against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.bench.train import RUNS, main


@pytest.mark.slow  # ten nas.train runs and a trained model: ~2 minutes on 2 busy cores
def test_tiny_bench_compares_every_switch_with_its_plain_counterpart(
    tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["base_steps=10", "steps=3", "seeds=2", "eval_windows=4", "corpus_mb=1",
            f"runs_dir={tmp_path}", f"cache_dir={shared_cache}"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "bench" / "train.json").read_text())
    rows = report["rows"]
    for name, *_ in RUNS:
        assert sorted(r["seed"] for r in rows if r["row"] == name) == [0, 1], name
    assert all(r["bpb"] > 0 for r in rows)
    printed = capsys.readouterr().out
    for switch in ("QAT (qat=true)", "student, teacher=trained", "LoRA (lora=true)"):
        line = next(x for x in printed.splitlines() if f"| {switch} |" in x)
        assert "±" in line.split("|")[-2], line  # the paired Δ against its plain counterpart

    # The trained model is cached: a second run trains only the compared runs.
    assert main([*argv, "seeds=1"]) == 0
    assert "trained model from" in capsys.readouterr().out
