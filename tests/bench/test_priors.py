"""`nas.bench priors`: every published case prices, the ratio is the prior's over the
published figure, and the leave-one-out fit recovers an efficiency the cases imply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.bench import priors
from nas.errors import NasError


def test_every_published_case_is_complete_and_sourced() -> None:
    cases = priors.load_cases(priors.DATA)
    assert len(cases) >= 6
    for case in cases:
        assert case["source"].startswith("https://"), case["model"]
        assert case["bits"] in (16, 8, 4) and case["decode_tok_s"] > 0
        priors.candidate_of(case)  # the shape is one the engine prices


def test_the_ratio_is_the_prior_over_the_published_figure() -> None:
    case = priors.load_cases(priors.DATA)[0]
    report = priors.score([case], min_cases=3)
    row = report["cases"][0]
    assert row["published_ms"] == pytest.approx(1000.0 / case["decode_tok_s"])
    assert row["ratio"] == pytest.approx(row["prior_ms"] / row["published_ms"])
    # the prior is its memory-bound roofline at the profile's efficiency plus the overheads
    eff = row["prior_efficiency"]
    assert row["prior_ms"] == pytest.approx(
        row["memory_ms_at_full_bandwidth"] / eff + row["fixed_ms"], rel=1e-6
    )
    assert report["groups"]["rpi5/llama.cpp"]["status"].startswith("spec prior")


def test_a_fit_to_consistent_cases_predicts_each_left_out_case() -> None:
    """Cases made to agree with one efficiency (0.5) are fitted to it, and each left-out case
    is predicted within rounding; the prior's own efficiency is not what they imply."""
    cases = priors.load_cases(priors.DATA)[:4]
    profile_rows = priors.score(cases, min_cases=99)["cases"]
    for case, row in zip(cases, profile_rows, strict=True):
        ms = row["memory_ms_at_full_bandwidth"] / 0.5 + row["fixed_ms"]
        case["decode_tok_s"] = 1000.0 / ms
    group = priors.score(cases, min_cases=3)["groups"]["rpi5/llama.cpp"]
    assert group["fitted_efficiency"] == pytest.approx(0.5, rel=1e-6)
    assert max(abs(e) for e in group["loo_errors"]) < 1e-6
    assert group["status"] == "fitted to published figures (llama.cpp)"


def test_a_case_without_its_source_is_refused(tmp_path: Path) -> None:
    case = dict(priors.load_cases(priors.DATA)[0])
    del case["source"]
    path = tmp_path / "speeds.yaml"
    path.write_text(yaml.safe_dump({"cases": [case]}))
    with pytest.raises(NasError, match="lacks source"):
        priors.load_cases(path)


def test_the_command_writes_its_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert priors.main([f"runs_dir={tmp_path}"]) == 0
    report = json.loads((tmp_path / "bench" / "priors.json").read_text())
    assert len(report["cases"]) == len(priors.load_cases(priors.DATA))
    assert "ratio = prior" in capsys.readouterr().out
