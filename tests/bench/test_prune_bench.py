"""`python -m nas.bench prune` at a tiny size: the distillation proxy graded against longer
distillation, pruned children against the same shapes from scratch at equal FLOPs, every run
cached so that a second invocation trains nothing; and the bench's own parent, trained once."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from nas.bench.prune import DEFAULTS, bench_parent, main
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.parent import load_parent


@pytest.mark.slow  # the tiny parents (session fixture) and 10 child runs: minutes on busy cores
def test_tiny_prune_bench_grades_the_proxy_and_reuses_its_cache(
    tiny_parents: dict, tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tiny_parents["llama"].directory
    argv = [f"parent={parent}", "budget=smoke", "children=3", "truth_factor=2", "truth_seeds=1",
            "compare=2", "workers=1", f"runs_dir={tmp_path}",
            f"cache_dir={shared_cache}"]  # fmt: skip
    assert main(argv) == 0
    first = capsys.readouterr().out
    # ladders, truths, scratch runs, random-unit children
    assert first.count("  trained ") == 3 + 3 + 2 + 2
    report = json.loads((tmp_path / "bench" / "prune.json").read_text())

    fid = report["fidelity"]
    assert len(fid["children"]) == 3 and fid["rung_steps"] == [6, 12]
    assert fid["truth"]["steps"] == 12 and fid["truth"]["seeds"] == 1
    assert math.isnan(fid["truth"]["tau_between_seeds"])  # one seed: no ceiling to measure
    for name in ("rung 0 (6 steps distilled), seed 0", "as pruned (no training)"):
        grades = fid["grades"][name]
        assert -1.0 <= grades["kendall_tau"] <= 1.0 and grades["regret_bpb"] >= 0.0
    assert all(0 < b < 10 for b in fid["truth"]["bpb_mean"])
    # distillation moved every child away from where pruning left it
    pruned, rung0 = (
        fid["scores"]["as pruned (no training)"],
        fid["scores"]["rung 0 (6 steps distilled), seed 0"],
    )
    assert all(p != r for p, r in zip(pruned, rung0, strict=True))

    rows = report["versus_scratch"]
    assert len(rows) == 2
    for row in rows:  # the teacher's forward passes buy scratch extra steps
        assert row["scratch_steps"] > row["distill_steps"] == 12
        assert len(row["distilled_bpb"]) == 1 and len(row["scratch_bpb"]) == 1
    random = report["versus_random"]
    assert len(random["rows"]) == 2 and random["random_pruned_mean_bpb"] > 0
    for row in random["rows"]:  # other units kept: another child, another result
        assert row["random_pruned_bpb"] != row["pruned_bpb"]
        assert row["random_distilled_bpb"] != row["distilled_bpb"]
    assert report["parent"]["bpb"] > 0 and report["parent"]["training"] is None
    assert "| score | Kendall tau | top-5 | regret (bpb) |" in first

    # A second run reads every run from the cache.
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "  trained " not in again and "wrote" in again
    assert json.loads((tmp_path / "bench" / "prune.json").read_text())["fidelity"] == fid


def test_the_bench_parent_is_trained_once_and_loads_as_a_parent(
    tmp_path: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_settings(["budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}"])
    opts = {**DEFAULTS, "parent_layers": 1, "parent_d_model": 64, "parent_steps": 4}
    directory = bench_parent(cfg, opts)
    assert "training the bench parent" in capsys.readouterr().out
    parent = load_parent(directory)  # config.json, safetensors and tokenizer.json
    assert parent.arch.n_layers == 1 and parent.arch.d_model == 64
    assert list(directory.glob("*.safetensors"))
    info = json.loads((directory / "parent.json").read_text())
    assert info["steps"] == 4 and info["bpb"] > 0

    assert bench_parent(cfg, opts) == directory
    assert "training" not in capsys.readouterr().out  # cached: trained once


def test_a_bad_parent_kind_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    for bad, match in (("parent_kind=huge", "parent_kind=huge"),
                       ("parent_d_model=100", "parent_d_model=100"), ("children=0", "children"),
                       ("truth_seeds=0", "truth_seeds")):  # fmt: skip
        with pytest.raises(NasError, match=match):
            main([bad, "budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={tmp_path / 'c'}"])
    assert list(tmp_path.iterdir()) == []
