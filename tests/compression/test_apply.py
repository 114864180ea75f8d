"""Compression inside the search: every trial scores its compressed model and records a recipe."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.compression import compress, plan
from nas.compression.matrices import block_matrices
from nas.compression.prune import measured_sparsity
from nas.config.compose import load_settings
from nas.config.rules import typed
from nas.config.schema import CompressionSettings
from nas.errors import NasError
from nas.quality.data import prepare_data
from nas.quality.models import build_model
from nas.search.run import run_search

SMALL = [
    "search_space.n_layers=[1]", "search_space.n_heads=[2]", "search_space.head_dim=[16]",
    "search_space.n_kv_heads=[1]", "search_space.n_experts=[1]",
]  # fmt: skip


def test_pareto_entries_carry_both_bpb_values_and_the_recipe(smoke_overrides: list[str]) -> None:
    cfg = load_settings(
        [
            *smoke_overrides,
            *SMALL,
            "search_space.weight_bits=[4]",
            "search_space.group_size=[32]",
            "search_space.sparsity=[unstructured50]",
            "study.name=C",
            "study.n_trials=2",
        ]
    )
    run_search(cfg)
    front = json.loads((Path(cfg.runs_dir) / "C" / "pareto.json").read_text())["pareto"]
    assert front
    for entry in front:
        metrics = entry["metrics"]
        assert entry["compression"]["weight_bits"] == 4
        assert metrics["bpb"] != metrics["bpb_uncompressed"]  # the compressed model was scored
    study = optuna.load_study(study_name="C", storage=cfg.study.storage)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        recipe = trial.user_attrs["recipe"]
        assert recipe["format"] == "slm-nas-compression/1"
        assert recipe["quantization"]["bits"] == 4
        assert recipe["quantization"]["group_size"] == 32
        assert recipe["sparsity"]["pattern"] == "unstructured"
        if trial.user_attrs.get("trained") and "cached_from" not in trial.user_attrs:
            assert recipe["sparsity"]["measured"] == pytest.approx(0.5, abs=0.01)


def test_pareto_entries_and_recipes_name_the_methods(smoke_overrides: list[str]) -> None:
    cfg = load_settings(
        [
            *smoke_overrides,
            *SMALL,
            "search_space.weight_bits=[4]",
            "search_space.group_size=[16]",
            "search_space.sparsity=[2:4]",
            "search_space.quant_method=[gptq]",
            "search_space.prune_method=[wanda]",
            "study.name=M",
            "study.n_trials=1",
        ]
    )
    run_search(cfg)
    study = optuna.load_study(study_name="M", storage=cfg.study.storage)
    (trial,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trial.user_attrs["compression"]["quant_method"] == "gptq"
    assert trial.user_attrs["compression"]["prune_method"] == "wanda"
    recipe = trial.user_attrs["recipe"]
    assert recipe["quantization"]["method"] == "gptq"
    assert recipe["quantization"]["calibration"]["source"] == "training split"
    assert recipe["sparsity"]["method"] == "wanda"
    assert trial.params["quant_method"] == "gptq" and trial.params["prune_method"] == "wanda"


def test_default_methods_keep_the_candidate_keys_of_older_studies() -> None:
    arch = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=64)
    comp = CompressionConfig(weight_bits=4, group_size=32)
    old = {"weight_bits": 4, "group_size": 32, "sparsity": 0.0, "sparsity_pattern": "none"}
    assert comp.key_dict() == old
    assert Candidate(arch, comp).key() != Candidate(arch, replace(comp, quant_method="gptq")).key()


def test_uncompressed_trials_score_the_trained_model(smoke_overrides: list[str]) -> None:
    cfg = load_settings(
        [
            *smoke_overrides,
            *SMALL,
            "search_space.weight_bits=[16]",
            "search_space.sparsity=[none]",
            "study.name=U",
            "study.n_trials=1",
        ]
    )
    result = run_search(cfg)
    (entry,) = result.pareto
    assert entry["metrics"]["bpb"] == entry["metrics"]["bpb_uncompressed"]


def test_recovery_keeps_the_masks_and_is_recorded(smoke_overrides: list[str]) -> None:
    cfg = load_settings(smoke_overrides)
    data, _, info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
    proxy = cfg.proxy.training
    arch = ArchConfig(
        n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=info["vocab_size"]
    )
    candidate = Candidate(
        arch, CompressionConfig(weight_bits=8, group_size=32, sparsity=0.5, sparsity_pattern="2:4")
    )
    model = build_model(arch, max_positions=proxy.seq_len)
    before = [m.get().clone() for m in block_matrices(model)]
    settings = CompressionSettings(recovery_steps=3, recovery_lr=1e-2, distill=True)
    done = compress(model, candidate, settings=settings, data=data, proxy=proxy)
    assert len(done.recovery_losses) == 3
    assert done.recipe.recovery is not None and done.recipe.recovery.distill
    matrices = block_matrices(done.model)
    assert measured_sparsity(matrices) >= 0.5  # quantization may round a few more to zero
    changed = [not torch.equal(m.get(), b) for m, b in zip(matrices, before, strict=True)]
    assert all(changed)
    json.dumps(done.recipe.to_dict())  # the recipe is plain data


def test_plan_names_the_matrices_of_dense_and_moe_models() -> None:
    dense = ArchConfig(n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=32, vocab_size=64)
    moe = ArchConfig(
        n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=32, vocab_size=64,
        n_experts=2, experts_per_token=1, moe_every=2,
    )  # fmt: skip
    for arch in (dense, moe):
        names = {
            m.name.split(".", 3)[3].removesuffix(".weight")
            for m in block_matrices(build_model(arch, max_positions=16))
        }
        assert set(plan(Candidate(arch)).modules) == names
    assert plan(Candidate(dense)).is_identity


@pytest.mark.parametrize(
    "bad",
    [{"recovery_steps": "abc"}, {"recovery_steps": -1}, {"recovery_steps": 1.5},
     {"distill": "maybe"}, {"temperature": 0.0}, {"recovery_step": 3},
     {"int8_activations": "sometimes"}, {"recovery_lr": float("nan")}],
)  # fmt: skip
def test_bad_compression_settings_are_refused(bad: dict) -> None:
    with pytest.raises(NasError) as info:
        typed(CompressionSettings, bad, prefix="compression")
    assert "\n" not in str(info.value)


def test_the_cli_prints_one_line_for_a_bad_setting(smoke_overrides: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nas.search", *smoke_overrides, "compression.recovery_steps=x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: compression.recovery_steps")


def test_int8_activations_are_scored_and_recorded() -> None:
    arch = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=64)
    candidate = Candidate(arch, CompressionConfig(weight_bits=4, group_size=32))
    x = torch.randint(0, 64, (2, 12))
    base = build_model(arch, max_positions=16).eval()
    weight_only = compress(copy.deepcopy(base), candidate)
    a8 = compress(
        copy.deepcopy(base), candidate, settings=CompressionSettings(int8_activations=True)
    )
    assert a8.recipe.quantization.activations == "int8"
    assert weight_only.recipe.quantization.activations == "float"
    with torch.no_grad():
        assert not torch.equal(a8.model(input_ids=x).logits, weight_only.model(input_ids=x).logits)
        a8.remove_hooks()  # what is exported: the same weights, no activation hooks
        torch.testing.assert_close(
            a8.model(input_ids=x).logits, weight_only.model(input_ids=x).logits
        )


def test_a_checkpoint_compressed_with_int8_activations_is_scored_with_them() -> None:
    """nas.train applies the recipe (weights only on the checkpoint), records the activations,
    and scores the result as the runtime computes it: what the trial was scored in."""
    from nas.compression.checkpoint import apply_recipe, runtime_numerics

    arch = ArchConfig(n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, vocab_size=64)
    comp = CompressionConfig(weight_bits=8, group_size=32)
    x = torch.randint(0, 64, (2, 12))
    base = build_model(arch, max_positions=16).eval()
    scored = compress(
        copy.deepcopy(base),
        Candidate(arch, comp),
        settings=CompressionSettings(int8_activations=True),
    )
    recipe_file = {"compression": comp.to_dict(), "recipe": scored.recipe.to_dict()}
    model, applied = apply_recipe(copy.deepcopy(base), recipe_file, data=None, proxy=None)
    assert applied["recipe"]["quantization"]["activations"] == "int8"
    assert not any(m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        expected = scored.model(input_ids=x).logits
        with runtime_numerics(model, applied):
            assert torch.equal(model(input_ids=x).logits, expected)
        assert not any(m._forward_pre_hooks for m in model.modules())
        assert not torch.equal(model(input_ids=x).logits, expected)  # float activations differ
