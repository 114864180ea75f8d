"""The fidelity bench's end-to-end grading on a real smoke study: the truth is trained emitted
front first, and a front is only graded once every member has its truth."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from nas import records
from nas.bench._e2e import (
    _candidates,
    _key,
    _priority,
    _reports,
    _scored,
    across_searches,
    e2e_kinds,
    same_reference,
)
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.objectives.pareto import IncrementalFront, front_members
from nas.search.run import run_search


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> optuna.Study:
    runs = tmp_path_factory.mktemp("e2e") / "runs"
    settings = load_settings(
        ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
         "search_space.n_layers=[1,2]", "search_space.n_experts=[1]",
         "search_space.structured=[false]", "study.name=E", "study.n_trials=8"]
    )  # fmt: skip
    run_search(settings)
    return optuna.load_study(study_name="E", storage=settings.study.storage)


def _emitted(study: optuna.Study) -> set[str]:
    trials = study.get_trials(deepcopy=False)
    return {_key(records.read(t)) for t in front_members(trials, records.target(study))}


def test_the_emitted_front_is_trained_first_then_layer_by_layer(study: optuna.Study) -> None:
    priority = _priority(study)
    assert set(priority) == set(_candidates(study))
    assert {k for k, p in priority.items() if p == 0} == _emitted(study)
    learned = [t for t in study.get_trials(deepcopy=False) if records.learns(t)]
    first = IncrementalFront()  # layer 1: the rung-0 front, bar the emitted members
    for t in learned:
        first.add(t.values, t.number)
    layer_one = {_key(records.read(t)) for t in learned if t.number in first.items}
    assert {k for k, p in priority.items() if p == 1} == layer_one - _emitted(study)
    assert max(priority.values()) >= 1


def test_a_front_is_graded_only_when_every_member_has_its_truth(study: optuna.Study) -> None:
    emitted = _emitted(study)
    quality = {_key(records.read(t)): t.values[0] for t in study.get_trials() if records.learns(t)}
    missing_one = {k: v for k, v in quality.items() if k != next(iter(emitted))}
    assert _scored(study, 1.0, missing_one) is None

    only_front = _scored(study, 1.0, {k: quality[k] for k in emitted})
    assert only_front is not None and not only_front["complete"]
    assert only_front["capture"] == pytest.approx(1.0)  # nothing scored beyond it: a bound

    every = _scored(study, 1.0, quality)
    assert every is not None and every["complete"] and every["scored"] == every["learned"]
    assert 0.0 < every["true_hv"] <= every["best_hv"] * (1 + 1e-12)
    assert every["true_hv"] == pytest.approx(only_front["true_hv"])


def test_e2e_kinds_keep_the_bench_order_and_refuse_a_list_without_the_default() -> None:
    assert e2e_kinds({"e2e_kinds": "random,multi-fidelity"}) == ["multi-fidelity", "random"]
    for bad in ("random", "multi-fidelity,randm", ""):
        with pytest.raises(NasError, match="multi-fidelity"):
            e2e_kinds({"e2e_kinds": bad})


def test_across_searches_pairs_each_kind_with_the_default_of_the_same_search_seed(
    tmp_path: Path,
) -> None:
    hv = {0: {"multi-fidelity": 0.10, "random": 0.12, "single-fidelity": 0.11},
          1: {"multi-fidelity": 0.14, "random": 0.13},
          2: {"multi-fidelity": 0.12, "random": 0.14}}  # fmt: skip
    for seed, row in hv.items():  # as e2e_part leaves them, one folder per search seed
        folder = tmp_path / ("fidelity-e2e" + (f"-seed{seed}" if seed else ""))
        folder.mkdir()
        studies = {kind: {"true_hv": value} for kind, value in row.items()}
        (folder / "report.json").write_text(json.dumps({"seed": seed, "studies": studies}))
    (tmp_path / "fidelity-e2e-seed3").mkdir()  # a run not graded yet counts for nothing

    spread = across_searches(_reports(tmp_path))
    assert spread["multi-fidelity"]["search_seeds"] == [0, 1, 2]
    assert spread["multi-fidelity"]["mean"] == pytest.approx(0.12)
    assert spread["multi-fidelity"]["sd"] == pytest.approx(0.02)
    assert "minus_default" not in spread["multi-fidelity"]
    random = spread["random"]["minus_default"]
    assert random["n"] == 3 and random["above"] == 2  # +0.02, -0.01, +0.02
    assert random["mean"] == pytest.approx(0.01)
    single = spread["single-fidelity"]
    assert single["n"] == 1 and single["sd"] == 0.0 and single["minus_default"]["above"] == 1
    assert "random, multi-fidelity" not in spread


def test_reports_under_another_reference_point_are_not_pooled(
    study: optuna.Study, tmp_path: Path
) -> None:
    """Latency priors that changed move the reference point: such a report scores other
    objectives, and so does an older one that does not say which it used."""
    quality = {_key(records.read(t)): t.values[0] for t in study.get_trials() if records.learns(t)}
    row = _scored(study, 1.0, quality)
    assert row is not None and row["reference"] == records.reference(study)
    other = {**row["reference"], "decode_ms": row["reference"]["decode_ms"] * 1.5}
    studies = {0: row, 1: {**row, "reference": other}, 2: {k: v for k, v in row.items()
                                                         if k != "reference"}}  # fmt: skip
    for seed, one in studies.items():
        folder = tmp_path / ("fidelity-e2e" + (f"-seed{seed}" if seed else ""))
        folder.mkdir()
        report = {"seed": seed, "studies": {"multi-fidelity": one}}
        (folder / "report.json").write_text(json.dumps(report))
    pooled, left_out = same_reference(_reports(tmp_path), row["reference"])
    assert list(pooled) == [0] and left_out == [1, 2]
    assert across_searches(pooled)["multi-fidelity"]["n"] == 1
