"""Fixtures for nas.train's tests: an exported smoke trial, and a checkpoint trained from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nas.config.compose import load_settings
from nas.export.run import run_export
from nas.search.run import run_search
from nas.train.args import TrainSettings
from nas.train.run import train


def with_recipe(source: Path, out: Path, compression: dict) -> Path:
    """A copy of model directory `source` whose compression.json asks for `compression`."""
    shutil.copytree(source, out)
    path = out / "compression.json"
    recipe = json.loads(path.read_text())
    recipe.pop("applied", None)
    recipe["compression"] = compression
    recipe["recipe"] = None  # the step list is derived from `compression` when absent
    path.write_text(json.dumps(recipe))
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A dense smoke trial, exported, with a recipe that both prunes (2:4) and quantizes."""
    root = tmp_path_factory.mktemp("train")
    cfg = load_settings(
        [
            "hardware=pixel8",
            "budget=smoke",
            f"runs_dir={root / 'runs'}",
            f"cache_dir={shared_cache}",
            "quiet=true",
            "study.name=T",
            "study.n_trials=1",
            # One shape, whatever the sampler would try first (it weighs the priors' prices):
            # d_model 32, wide enough for LoRA to recover some of what int4 costs in 16 steps.
            "search_space.n_experts=[1]",
            "search_space.n_layers=[1]",
            "search_space.n_heads=[2]",
            "search_space.head_dim=[16]",
            "search_space.n_kv_heads=[1]",
            "search_space.ffn_ratio=[2.0]",
            "search_space.tie_embeddings=[false]",
            # the shape searched is the shape trained (a shrink trial's recipe prunes after
            # training, and `with_recipe` replaces the recipe)
            "search_space.structured=[false]",
        ]
    )
    run_search(cfg)
    (done,) = run_export(
        [f"runs_dir={root / 'runs'}", "study.name=T", "trial=0", f"out={root / 'T'}", "onnx=false"]
    )
    with_recipe(done.path, root / "T-recipe", {
        "weight_bits": 8, "group_size": 32, "sparsity": 0.5, "sparsity_pattern": "2:4",
    })  # fmt: skip
    return root / "T-recipe"


@pytest.fixture(scope="session")
def trained(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`exported` trained 16 steps, uncompressed: a teacher, and weights for LoRA to start from
    (still far from its plateau, so that a short fine-tune of it measurably helps)."""
    out = tmp_path_factory.mktemp("trained") / "ckpt"
    settings = TrainSettings(steps=16, warmup_steps=2, lr=1e-2, seq_len=32, batch_size=8,
                             corpus_mb=1, eval_windows=8, quiet=True, compress=False,
                             out=str(out))  # fmt: skip
    train(exported, settings)
    return out


@pytest.fixture(scope="session")
def recipe_copy():
    """`with_recipe(source, out, compression)`: a copy of a model directory with another recipe."""
    return with_recipe
