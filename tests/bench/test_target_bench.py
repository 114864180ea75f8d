"""The fidelity bench's target check on real (smoke-length) runs: the late-slope prior is graded
beside the curve fit, architectures among its rows leave-one-out, and the rows it prints are
rows the prior reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from nas.bench.fidelity import main
from nas.errors import NasError
from nas.fidelity import late_slope


def test_the_target_check_grades_the_prior_and_prints_its_rows(
    tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}", "part=target",
        "archs=3", "target_archs=2", "target_from=1", "target_factor=3", "workers=1",
    ]  # fmt: skip
    assert main(args) == 0
    table = json.loads((tmp_path / "bench" / "fidelity.json").read_text())["target"]
    prior = table["late_slope"]
    assert table["architectures"] == 2 and len(prior["values"]) == 2
    assert set(table["late-slope prior"]) == {"kendall_tau", "top5", "regret_bpb"}
    names = {r.arch for r in late_slope.read_rows()}
    assert prior["held_out"] == sum(row["arch"] not in names for row in prior["rows"])
    assert "late-slope prior" in table["front_depths"]
    printed = capsys.readouterr().out.split("rows for nas/fidelity/late_slope.yaml:\n")[1]
    rows_file = tmp_path / "rows.yaml"
    rows_file.write_text("rows:\n" + printed.split("wrote")[0])
    rows = late_slope.read_rows(rows_file)
    assert [r.arch for r in rows] == [row["arch"] for row in prior["rows"]]
    assert all(r.long_steps == 3 * 6 and r.top_steps == 12 for r in rows)
    assert (
        yaml.safe_load(rows_file.read_text())["rows"][0]["long_bpb"] == prior["rows"][0]["long_bpb"]
    )


def test_a_target_set_beyond_the_architectures_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="target_from"):
        main([f"runs_dir={tmp_path}", "target_from=13"])
    assert not any(tmp_path.iterdir())
