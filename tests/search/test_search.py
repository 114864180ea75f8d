"""End to end: a smoke study runs, resumes, never retrains, and fails clearly on bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas.arch import ArchConfig
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.search.run import run_search

ARCH_KEYS = {
    "n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "n_experts",
    "experts_per_token", "moe_every", "tie_embeddings", "vocab_size",
}  # fmt: skip
COMPRESSION_KEYS = {
    "weight_bits",
    "group_size",
    "sparsity",
    "sparsity_pattern",
    "quant_method",
    "prune_method",
}
METRIC_KEYS = {"bpb", "decode_ms", "prefill_ms", "memory_mb", "params", "active_params"}


def finished(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_smoke_study_runs_twice_and_resumes(smoke_overrides: list[str]) -> None:
    cfg = load_settings([*smoke_overrides, "study.name=S", "study.n_trials=3"])
    first = run_search(cfg)
    assert first.finished == 3
    second = run_search(cfg)
    assert second.finished == 6
    trials = finished(cfg.study.storage, "S")
    assert len(trials) == 6
    # The resumed run's sampler is seeded differently: it does not replay the first run.
    assert [t.params for t in trials[:3]] != [t.params for t in trials[3:]]

    out = Path(cfg.runs_dir) / "S"
    written = json.loads((out / "pareto.json").read_text())
    # Smoke candidates are tiny against a Pixel 8: the file says the caps bound the search.
    reach = written["device_reach"]
    assert reach["out_of_reach"] and reach["candidates"] == 6
    assert 0 < reach["decode_share"] < 0.1 and "budget=gpu" in reach["note"]
    front = written["pareto"]
    assert front, "pareto.json is empty"
    for entry in front:
        assert isinstance(entry["trial"], int)
        assert set(entry["arch"]) == ARCH_KEYS
        assert set(entry["compression"]) == COMPRESSION_KEYS
        assert METRIC_KEYS <= set(entry["metrics"])
        assert entry["metrics"]["bpb"] > 0
        # decode is quoted at the device's long context too, slower there (a larger KV cache)
        assert entry["metrics"]["decode_ms_long"] > entry["metrics"]["decode_ms"]
    assert written["device_limits"]["long_context_len"] == 4 * 1024
    assert written["latency_predictor"]["runtime"] == "onnxruntime"  # the runtime group's default
    assert (out / "pareto.csv").read_text().startswith("trial,")
    assert (out / "tokenizer.json").is_file()


def test_same_candidate_is_never_trained_twice(smoke_overrides: list[str]) -> None:
    # A one-choice space: every trial samples the same candidate; only the first trains.
    fixed = [
        "search_space.n_layers=[1]", "search_space.n_heads=[2]", "search_space.head_dim=[16]",
        "search_space.n_kv_heads=[1]", "search_space.ffn_ratio=[2.0]",
        "search_space.n_experts=[1]", "search_space.tie_embeddings=[true]",
        "search_space.weight_bits=[16]", "search_space.sparsity=[none]",
        "search_space.structured=[false]",
    ]  # fmt: skip
    cfg = load_settings([*smoke_overrides, *fixed, "study.name=fixed", "study.n_trials=3"])
    run_search(cfg)
    trials = finished(cfg.study.storage, "fixed")
    # trial 0 stayed at rung 0 alone; with the run's trials spent it went on as trial 3, which
    # carries rung 0's result (retraining its trunk) and is the only other training
    assert [t.user_attrs.get("cached_from") for t in trials] == [None, 0, 0, None]
    assert trials[3].user_attrs["continues"] == 0
    assert trials[3].user_attrs["rungs"][0] == trials[0].user_attrs["rungs"][0]
    assert all("train_seconds" not in t.user_attrs for t in trials[1:3])
    assert len({t.values[0] for t in trials}) == 1
    front = json.loads((Path(cfg.runs_dir) / "fixed" / "pareto.json").read_text())["pareto"]
    assert [e["trial"] for e in front] == [3]  # the reused trials do not repeat it on the front


def test_infeasible_candidates_are_recorded_not_trained(smoke_overrides: list[str]) -> None:
    # 60.2 MB leaves room for the runtime (60 MB) but not for every candidate's weights + cache.
    # Random sampling: the default cost-aware sampler never proposes a candidate over a limit.
    cfg = load_settings([
        *smoke_overrides, "study.name=tight", "study.n_trials=6", "sampler=random",
        "hardware.deploy.max_memory_mb=60.2", "hardware.deploy.context_len=2048",
    ])  # fmt: skip
    run_search(cfg)
    trials = finished(cfg.study.storage, "tight")
    infeasible = [t for t in trials if any(v > 0 for v in t.constraints.values())]
    assert infeasible, "the tight memory limit should exclude some candidates"
    for t in infeasible:
        assert t.user_attrs["trained"] is False
        assert "train_seconds" not in t.user_attrs
        assert "memory" in t.user_attrs["skipped"]
    front = json.loads((Path(cfg.runs_dir) / "tight" / "pareto.json").read_text())["pareto"]
    assert {e["trial"] for e in front}.isdisjoint({t.number for t in infeasible})


def test_diverging_trial_fails_with_reason_and_study_goes_on(smoke_overrides: list[str]) -> None:
    cfg = load_settings([*smoke_overrides, "study.name=nan", "study.n_trials=2", "proxy.lr=1e30"])
    result = run_search(cfg)
    study = optuna.load_study(study_name="nan", storage=cfg.study.storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(study.trials) == 2 and result.finished + len(failed) == 2
    assert failed, "lr=1e30 should diverge"
    assert all("training loss became" in t.user_attrs["fail_reason"] for t in failed)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["hardware=nope"], "unknown hardware 'nope'; choose one of:"),
        (
            ["search_space.n_heads=[4]", "search_space.n_kv_heads=[3]"],
            "search_space.n_kv_heads [3] holds no divisor of n_heads=4",
        ),
        (["proxy.corpus=/no/such/corpus.txt"], "corpus not found: /no/such/corpus.txt"),
        (["study.n_trials=many"], "study.n_trials must be an integer"),
    ],
)
def test_bad_input_is_one_clear_error(
    smoke_overrides: list[str], overrides: list[str], expected: str
) -> None:
    with pytest.raises(NasError) as err:
        run_search(load_settings([*smoke_overrides, *overrides]))
    assert expected in str(err.value)


def test_unwritable_runs_dir_is_one_clear_error(tmp_path: Path, shared_cache: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")  # as root, chmod would not stop us
    run = subprocess.run(
        [sys.executable, "-m", "nas.search", "budget=smoke", f"runs_dir={blocker}/runs",
         f"cache_dir={shared_cache}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write runs_dir=")
    assert "is a file" in lines[0]
    assert blocker.read_text() == "a file where a folder should be"


def test_resumed_study_refuses_other_settings(smoke_overrides: list[str]) -> None:
    run_search(load_settings([*smoke_overrides, "study.name=same", "study.n_trials=1"]))
    changed = load_settings([*smoke_overrides, "study.name=same", "proxy.steps=3"])
    with pytest.raises(NasError, match="was started with other settings"):
        run_search(changed)
    db = Path(changed.study.storage.removeprefix("sqlite:///"))
    count = sqlite3.connect(db).execute("select count(*) from trials").fetchone()[0]
    assert count == 1  # nothing stored was lost or added


def test_a_study_priced_by_one_calibration_never_resumes_with_another(
    smoke_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-calibrating the device changes every decode ms and memory MB: the study's identity holds
    the calibration's fingerprint, so its old and new prices are never mixed."""
    import functools

    import nas.search.run as search_run
    from nas.calibrate.fit import fit_and_score, write_calibration
    from predictors.factory import latency_predictor, memory_predictor
    from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates

    calibrations = tmp_path / "calibrations"
    for name, function in (("latency_predictor", latency_predictor),
                           ("memory_predictor", memory_predictor)):  # fmt: skip
        monkeypatch.setattr(search_run, name, functools.partial(function, directory=calibrations))
    hw = profile("pixel8")
    source = {"device": "pixel8 (test)", "cpu_model": "test", "date": "2026-12-06"}

    def calibrate(scale: float) -> None:
        coef = {q: v * scale for q, v in TRUE_COEF.items()}
        rows = rows_from(coef, varied_candidates(20), hw)
        write_calibration(fit_and_score(rows, hw, source), calibrations / "pixel8.json")

    calibrate(1.0)
    first = load_settings([*smoke_overrides, "study.name=priced", "study.n_trials=1"])
    run_search(first)
    run_search(first)  # the same calibration resumes
    calibrate(1.5)
    with pytest.raises(NasError, match=r"other settings \(pricing: latency, pricing: memory"):
        run_search(first)


def test_a_study_priced_by_an_older_prior_never_resumes_with_this_one(
    smoke_overrides: list[str],
) -> None:
    """The roofline and memory priors now price int8/int4 as each runtime holds them: a study
    they priced before (stored as "prior") would mix two forms' decode ms and memory MB."""
    from nas import records
    from predictors.base import PRIOR_FORM

    cfg = load_settings([*smoke_overrides, "study.name=old_prior", "study.n_trials=1"])
    run_search(cfg)
    study = optuna.load_study(study_name="old_prior", storage=cfg.study.storage)
    stored = records.identity(study)
    assert stored is not None and stored["pricing"] == {"latency": PRIOR_FORM, "memory": PRIOR_FORM}
    records.store_identity(study, {**stored, "pricing": {"latency": "prior", "memory": "prior"}})
    with pytest.raises(NasError, match=r"other settings \(pricing: latency, pricing: memory"):
        run_search(cfg)


def test_new_study_stores_the_space_reference_and_a_resumed_one_keeps_its_own(
    smoke_overrides: list[str],
) -> None:
    cfg = load_settings([*smoke_overrides, "study.name=ref", "study.n_trials=1"])
    run_search(cfg)
    study = optuna.load_study(study_name="ref", storage=cfg.study.storage)
    stored = study.user_attrs["hypervolume_reference"]
    # The smoke space's nadir, well inside the Pixel 8's limits (50 ms, 2048 MB).
    assert 0 < stored["decode_ms"] < 50 and 0 < stored["memory_mb"] < 2048
    # A study started before the space reference kept the device limits: resuming keeps them.
    legacy = {**stored, "decode_ms": 50.0, "memory_mb": 2048.0}
    study.set_user_attr("hypervolume_reference", legacy)
    run_search(cfg)
    study = optuna.load_study(study_name="ref", storage=cfg.study.storage)
    assert study.user_attrs["hypervolume_reference"] == legacy


def test_a_given_tokenizer_prices_the_embedding_that_is_trained(
    smoke_overrides: list[str], tmp_path: Path
) -> None:
    """With proxy.tokenizer=PATH the vocabulary is the tokenizer's, not the budget's: the
    sampler prices, and the trial trains, candidates of that vocabulary."""
    from nas.quality.corpus import load_corpus, train_tokenizer
    from nas.quality.models import build_model, count_params
    from nas.samplers.factory import SamplerContext, SamplerSpec
    from nas.search.run import prepare

    corpus = load_corpus("default", max_mb=1, heldout_fraction=0.05)
    path = tmp_path / "tokenizer.json"
    train_tokenizer(corpus, 300).save(str(path))  # the smoke budget says 384
    settings = load_settings([*smoke_overrides, f"proxy.tokenizer={path}", "study.name=tok"])
    assert settings.budget.vocab_size == 384
    ready = prepare(settings)
    context = SamplerContext(ready.space, ready.cheap, settings.hardware.deploy)
    spec = SamplerSpec(settings.sampler, context)
    sampler = spec.build(0)
    assert sampler.space is ready.space and ready.space.vocab_size == 300
    result = run_search(load_settings([*smoke_overrides, f"proxy.tokenizer={path}",
                                       "study.name=tok", "study.n_trials=2"]))  # fmt: skip
    for entry in result.pareto:
        arch = ArchConfig.from_dict(entry["arch"])
        assert arch.vocab_size == 300
        assert count_params(build_model(arch)) == entry["metrics"]["params"]
