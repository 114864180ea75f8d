"""Quality proxies: config selection, the checkpoint hook, extrapolation, the bench's maths."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import optuna
import pytest

from nas.arch import ArchConfig, CompressionConfig
from nas.bench._quality import fit_compression, fit_quality
from nas.bench.proxy import architectures, fidelity, top_k_overlap
from nas.bench.sampler import history, trials_to_reach
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.objectives.hypervolume import Reference
from nas.quality.data import prepare_data
from nas.quality.scorers import (
    ExtrapolateProxy,
    ParamsProxy,
    TrainProxy,
    checkpoint_steps,
    extrapolate,
)
from nas.quality.training import train_proxy
from nas.search.run import build_scorer, run_search


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("proxy-cache")
    cfg = load_settings(["budget=smoke", f"runs_dir={cache}", f"cache_dir={cache}"])
    data, _, info = prepare_data(cfg.proxy, cache)
    return data, cfg.proxy.training, info["vocab_size"]


def test_extrapolate_recovers_a_power_law() -> None:
    steps = [15, 30, 45, 60]
    bpbs = [3.0 + 2.0 * t**-0.5 for t in steps]
    assert extrapolate(steps, bpbs, 480) == pytest.approx(3.0 + 2.0 * 480**-0.5, abs=1e-9)


def test_extrapolate_keeps_the_last_value_when_the_curve_does_not_fall() -> None:
    assert extrapolate([10, 20, 30], [4.0, 4.1, 4.2], 240) == 4.2


def test_params_proxy_ranks_by_non_embedding_parameters_only() -> None:
    small = ArchConfig(1, 2, 2, 16, 64, vocab_size=4096)
    large = ArchConfig(2, 4, 2, 16, 128, vocab_size=256)  # fewer embeddings, more blocks
    proxy = ParamsProxy()
    assert proxy.score(large, None) < proxy.score(small, None)
    assert not proxy.trains


@pytest.mark.parametrize(
    ("name", "kind"),
    [("train", TrainProxy), ("params", ParamsProxy), ("extrapolate", ExtrapolateProxy)],
)
def test_each_proxy_config_builds_its_proxy(name: str, kind: type) -> None:
    cfg = load_settings(["budget=smoke", f"proxy={name}"])
    assert isinstance(build_scorer(cfg), kind)
    assert build_scorer(cfg).name == cfg.proxy.name


def test_unknown_proxy_is_a_user_error() -> None:
    with pytest.raises(NasError, match="unknown proxy 'oracle'"):
        load_settings(["budget=smoke", "proxy=oracle"])
    cfg = load_settings(["budget=smoke", "proxy=extrapolate", "proxy.horizon=0.5"])
    with pytest.raises(NasError, match=r"proxy\.horizon must be >= 1"):
        build_scorer(cfg)


def test_checkpoints_are_measured_without_changing_training(smoke_data) -> None:
    data, settings, vocab = smoke_data
    arch = ArchConfig(1, 2, 2, 16, 32, vocab_size=vocab)
    plain = train_proxy(arch, data, settings)
    marked = train_proxy(arch, data, settings, checkpoints=[2, 4])
    assert [c[0] for c in marked.checkpoints] == [2, 4, settings.steps]
    assert marked.checkpoints[-1][1] == marked.bpb
    assert marked.bpb == pytest.approx(plain.bpb, abs=1e-6)  # evaluation does not disturb it
    assert marked.stopped_at is None


def test_on_checkpoint_can_stop_training(smoke_data) -> None:
    data, settings, vocab = smoke_data
    arch = ArchConfig(1, 2, 2, 16, 32, vocab_size=vocab)
    seen: list[int] = []
    result = train_proxy(
        arch,
        data,
        settings,
        checkpoints=[2, 4],
        on_checkpoint=lambda s, b: seen.append(s) or s == 4,
    )
    assert seen == [2, 4]
    assert result.stopped_at == 4
    assert result.tokens == 4 * settings.batch_size * settings.seq_len
    assert result.bpb == result.checkpoints[-1][1]


def test_extrapolate_proxy_scores_below_the_measured_end(smoke_data) -> None:
    data, settings, vocab = smoke_data
    settings = dataclasses.replace(settings, steps=12)
    proxy = ExtrapolateProxy(fractions=[0.25, 0.5, 0.75], horizon=8)
    arch = ArchConfig(1, 2, 2, 16, 32, vocab_size=vocab)
    result = train_proxy(arch, data, settings, checkpoints=proxy.checkpoint_steps(settings))
    assert checkpoint_steps([0.25, 0.5, 0.75], 12) == [3, 6, 9]
    assert proxy.score(arch, result) <= result.bpb


def test_search_with_params_proxy_trains_nothing(smoke_overrides: list[str]) -> None:
    cfg = load_settings([*smoke_overrides, "proxy=params", "study.name=P", "study.n_trials=3"])
    run_search(cfg)
    study = optuna.load_study(study_name="P", storage=cfg.study.storage)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert "learning_curve" not in trial.user_attrs
        arch = ArchConfig.from_dict(trial.user_attrs["arch"])
        if trial.user_attrs["trained"]:
            assert trial.values[0] == pytest.approx(-math.log10(arch.non_embedding_params))
            assert trial.user_attrs["metrics"]["quality_proxy"] == "params"
    assert study.user_attrs["identity"]["proxy"]["quality_proxy"] == {"name": "params"}


def test_fidelity_of_perfect_and_reversed_rankings() -> None:
    truth = [3.1, 3.4, 3.2, 3.9, 3.0]
    table = fidelity({"same": truth, "reversed": [-t for t in truth]}, truth)
    assert table["same"]["kendall_tau"] == pytest.approx(1.0)
    assert table["same"]["top3"] == 3
    assert table["reversed"]["spearman"] == pytest.approx(-1.0)
    assert top_k_overlap([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == 1


def test_bench_architectures_span_dense_moe_shallow_deep() -> None:
    archs = architectures(2048)
    assert len(archs) >= 12
    assert {a.n_experts > 1 for a in archs} == {True, False}
    assert {min(a.n_layers for a in archs), max(a.n_layers for a in archs)} == {1, 4}
    assert len({a.d_model for a in archs}) >= 5
    assert len({a.d_model for a in archs if a.n_experts > 1}) >= 3


def test_quality_model_fits_a_smooth_landscape() -> None:
    archs = architectures(2048)
    truth = [5.0 - 0.2 * math.log(a.non_embedding_params) for a in archs]
    model = fit_quality(archs, truth)
    assert model.loo_mae < 0.05
    assert np.corrcoef([model.predict(a) for a in archs], truth)[0, 1] > 0.99


def test_hypervolume_history_and_trials_to_reach() -> None:
    reference = Reference(bpb=4.0, decode_ms=10.0, memory_mb=100.0)
    points = [None, (3.0, 5.0, 50.0), (3.5, 1.0, 10.0), None, (2.0, 2.0, 20.0)]
    curve = history(points, reference)
    assert curve[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(curve))
    assert trials_to_reach(curve, curve[-1]) == 5
    assert trials_to_reach(curve, 2.0) is None


def test_compression_effects_are_fitted_additively() -> None:
    int4 = CompressionConfig(weight_bits=4, group_size=32)
    sparse = CompressionConfig(sparsity=0.5, sparsity_pattern="2:4")
    both = CompressionConfig(weight_bits=4, group_size=32, sparsity=0.5, sparsity_pattern="2:4")
    fitted = fit_compression([int4, sparse, both, CompressionConfig()], [0.1, 0.3, 0.4, 0.0])
    assert fitted == pytest.approx({"int4g32": 0.1, "2:4": 0.3})
    model = fit_quality(architectures(2048), [3.0] * 16, fitted)
    arch = architectures(2048)[0]
    assert model.predict(arch, both) == pytest.approx(model.predict(arch) + 0.4)
