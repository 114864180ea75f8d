"""The `prune` space on top of the contract: every sample is a child its parent can give (the
child's config builds in the parent's class and describes the sampled shape), the parent is part
of what the space offers, and bad parents or vocabularies are refused in one line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, GPT2Config

from nas.arch import arch_from_hf
from nas.config.compose import build, load_settings
from nas.errors import NasError
from nas.parent.child import check_child, child_config
from search_spaces import PruneSpace
from tests.search_spaces.test_contract import parent_configs, sample


@pytest.fixture(scope="module")
def parents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prune-parents")
    for name, config in parent_configs().items():
        config.save_pretrained(root / name)
    return root


def prune_space(parent: Path, *overrides: str, vocab_size: int = 512) -> PruneSpace:
    # budget=smoke: the settings check builds the space with the budget's vocabulary (384), which
    # these 512-token parents embed
    base = ["search_space=prune", f"search_space.parent={parent}", "budget=smoke"]
    cfg = load_settings([*base, *overrides])
    return instantiate(cfg.search_space, vocab_size=vocab_size, caps=cfg.budget.caps)


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_every_sample_is_a_child_the_parent_class_builds(parents: Path, family: str) -> None:
    space = prune_space(parents / family)
    model = AutoModelForCausalLM.from_config(parent_configs()[family])
    seen = set()
    for _, candidate in sample(space, 200, seed=5):
        arch = candidate.arch
        check_child(space.parent_arch, arch)  # fewer units, widths and vocabulary the parent's
        config = child_config(model, arch)  # Llama's config refuses heads not dividing hidden
        assert type(config) is type(model.config)
        assert arch_from_hf(config.to_dict()) == arch
        seen.add((arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.ffn_dim, arch.n_experts))
    assert len(seen) > 20  # the axes vary together, not one at a time


def test_shares_become_counts_and_the_caps_do_not_apply(parents: Path) -> None:
    space = prune_space(parents / "qwen3_moe")  # smoke caps: 2 layers, 4 experts
    assert space.n_layers == [2, 3, 4]  # 0.5, 0.75 and 1.0 of 4 layers
    assert space.ffn_dim == [8, 16, 24, 32]  # multiples of 8
    assert space.n_experts == [2, 3, 4]
    assert space._top_k_choices(2) == [1, 2] and space._top_k_choices(3) == [1, 2]
    choices = space.choices()
    assert choices["parent"] == [str(parents / "qwen3_moe")]  # another parent: another study
    assert prune_space(parents / "llama").choices() != choices


def test_llama_children_keep_head_counts_that_divide_the_residual_width(tmp_path: Path) -> None:
    config = parent_configs()["llama"]
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads = 48, 6, 2
    config.save_pretrained(tmp_path / "p")
    space = prune_space(tmp_path / "p", "search_space.heads_kept=[0.67,1.0]")
    heads = {c.arch.n_heads for _, c in sample(space, 100, seed=1)}
    assert heads and all(48 % h == 0 for h in heads)
    assert 2 in heads or 4 in heads  # groups of 3 shrink to 2 heads where the width allows


@pytest.mark.parametrize(
    ("setup", "expect"),
    [
        ("none", "search_space=prune needs search_space.parent=DIR"),
        ("missing", "nowhere not found; pass search_space.parent=DIR"),
        ("empty", "holds no config.json, so it is no Hugging Face model directory"),
        ("gpt2", "describes a 'gpt2' model; supported: llama"),
        ("vocab", "the tokenizer has 600 tokens but the parent embeds 512"),
    ],
)
def test_bad_parents_are_refused_in_one_line(
    parents: Path, tmp_path: Path, setup: str, expect: str
) -> None:
    overrides = ["search_space=prune", "budget=smoke"]
    vocab = 512
    if setup == "missing":
        overrides.append(f"search_space.parent={tmp_path / 'nowhere'}")
    elif setup == "empty":
        overrides.append(f"search_space.parent={tmp_path}")
    elif setup == "gpt2":
        GPT2Config(n_layer=2, n_head=2, n_embd=32).save_pretrained(tmp_path / "gpt2")
        overrides.append(f"search_space.parent={tmp_path / 'gpt2'}")
    elif setup == "vocab":
        overrides.append(f"search_space.parent={parents / 'llama'}")
        vocab = 600
    with pytest.raises(NasError) as err:
        cfg = load_settings(overrides)  # the settings check builds the space once already
        build("search_space", cfg.search_space, vocab_size=vocab, caps=cfg.budget.caps)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_a_seed_and_the_params_reproduce_children(parents: Path) -> None:
    space = prune_space(parents / "llama")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    for _ in range(15):
        trial = study.ask()
        candidate = space.suggest(trial)
        study.tell(trial, float(candidate.arch.params))
        assert space.candidate_from_params(trial.params) == candidate
