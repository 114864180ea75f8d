"""The contract every search space passes (as Optuna's sampler tests do for samplers).

Add a space to SPACES and it is held to the same checks: samples are valid by construction,
grouped-query attention and mixture of experts are both reachable (for `prune`: from an MoE parent,
and dense from a dense one), a seed reproduces a sample, and a finished trial's parameters rebuild
the same candidate. The `prune` space runs on parent directories holding only a config.json: it
reads nothing else.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from hydra.utils import instantiate
from transformers import LlamaConfig, Qwen3MoeConfig

from nas.arch import Candidate
from nas.config.compose import load_settings
from search_spaces import SearchSpace

# (space, budget or parent): slm under each budget's caps; prune from a dense and an MoE parent
SPACES = [("slm", budget) for budget in ("smoke", "cpu", "gpu", "executorch")] + [
    ("prune", "llama"),
    ("prune", "qwen3_moe"),
]
PARENT_VOCAB = 512


def parent_configs() -> dict[str, object]:
    common = dict(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_hidden_layers=4, vocab_size=PARENT_VOCAB, tie_word_embeddings=True,
    )  # fmt: skip
    return {
        "llama": LlamaConfig(intermediate_size=128, **common),
        "qwen3_moe": Qwen3MoeConfig(
            moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, **common
        ),
    }


@pytest.fixture(scope="session")
def config_parents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parent directories with a config.json only (what the prune space reads)."""
    root = tmp_path_factory.mktemp("config-parents")
    for name, config in parent_configs().items():
        config.save_pretrained(root / name)
    return root


def make_space(name: str, variant: str, parents: Path | None = None) -> SearchSpace:
    if name == "prune":
        overrides = ["search_space=prune", f"search_space.parent={parents / variant}"]
        cfg = load_settings([*overrides, "budget=smoke"])
    elif variant == "executorch":  # the cpu budget as the runtime group narrows it
        cfg = load_settings([f"search_space={name}", "budget=cpu", "runtime=executorch"])
    else:
        cfg = load_settings([f"search_space={name}", f"budget={variant}"])
    return instantiate(cfg.search_space, vocab_size=512, caps=cfg.budget.caps)


def sample(space: SearchSpace, n: int, seed: int) -> list[tuple[dict, Candidate]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        candidate = space.suggest(trial)
        study.tell(trial, 0.0)
        out.append((trial.params, candidate))
    return out


@pytest.fixture(params=SPACES, ids=lambda s: f"{s[0]}-{s[1]}")
def space(request: pytest.FixtureRequest, config_parents: Path) -> SearchSpace:
    return make_space(*request.param, parents=config_parents)


def test_samples_are_valid_by_construction(space: SearchSpace) -> None:
    for _, candidate in sample(space, 200, seed=1):
        arch = candidate.arch
        assert arch.n_heads % arch.n_kv_heads == 0
        assert 1 <= arch.experts_per_token <= arch.n_experts
        assert arch.vocab_size == 512 and arch.params > 0  # slm: the tokenizer's; prune: parent's
        comp = candidate.compression  # grouped below 16 bits, but for per-channel int8
        per_channel = space.compression.per_channel_bits
        grouped = comp.weight_bits < 16 and comp.weight_bits not in per_channel
        assert (comp.group_size > 0) == grouped


def test_gqa_moe_and_compression_are_reachable(space: SearchSpace) -> None:
    candidates = [c for _, c in sample(space, 300, seed=2)]
    assert any(1 < c.arch.n_kv_heads < c.arch.n_heads for c in candidates) or any(
        c.arch.n_kv_heads == 1 < c.arch.n_heads for c in candidates
    ), "grouped-query / multi-query attention never sampled"
    assert any(c.arch.n_kv_heads == c.arch.n_heads for c in candidates)
    moe = {c.arch.is_moe for c in candidates}
    if space.name == "prune":  # a child is dense or MoE as its parent is, and tied as it is
        assert moe == {space.parent_arch.is_moe}
        assert {c.arch.tie_embeddings for c in candidates} == {space.parent_arch.tie_embeddings}
    else:
        assert moe == {True, False}
        assert {c.arch.tie_embeddings for c in candidates} == {True, False}
    assert {c.compression.weight_bits for c in candidates} == {16, 8, 4}
    assert {c.compression.sparsity_pattern for c in candidates} == {"none", "unstructured", "2:4"}
    quantized = [c.compression for c in candidates if c.compression.weight_bits < 16]
    sparse = [c.compression for c in candidates if c.compression.sparsity_pattern != "none"]
    # ExecuTorch's runtime group leaves round-to-nearest: the others use ONNX Runtime's grid
    assert {c.quant_method for c in quantized} == set(space.compression.quant_method)
    assert len(space.compression.quant_method) == 3 or space.compression.per_channel_bits
    assert {c.prune_method for c in sparse} == {"magnitude", "wanda", "sparsegpt"}
    dense_fp16 = [c.compression for c in candidates if c.compression.weight_bits == 16]
    assert all(c.quant_method == "rtn" for c in dense_fp16)  # a method only where it acts


def test_seed_reproduces_samples(space: SearchSpace) -> None:
    first = [c for _, c in sample(space, 20, seed=7)]
    again = [c for _, c in sample(space, 20, seed=7)]
    other = [c for _, c in sample(space, 20, seed=8)]
    assert first == again
    assert first != other


def test_params_rebuild_the_candidate(space: SearchSpace) -> None:
    for params, candidate in sample(space, 30, seed=3):
        assert space.candidate_from_params(params) == candidate


def test_caps_bound_the_samples() -> None:
    space = make_space("slm", "smoke")
    cfg = load_settings(["budget=smoke"])
    for _, candidate in sample(space, 100, seed=4):
        assert candidate.arch.n_layers <= cfg.budget.caps["max_layers"]
        assert candidate.arch.n_heads <= cfg.budget.caps["max_heads"]
        assert candidate.arch.head_dim <= cfg.budget.caps["max_head_dim"]


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [("quant_method", "hqq", "any of rtn, gptq, awq"),
     ("prune_method", "random", "any of magnitude, wanda, sparsegpt")],
)  # fmt: skip
def test_unknown_methods_are_refused_when_the_space_is_built(key: str, value: str, rule: str):
    from nas.errors import NasError
    from search_spaces.slm import checked

    with pytest.raises(NasError, match=f"search_space.{key}: '{value}' unsupported; .*{rule}"):
        checked(key, [value])


def test_executorchs_int8_samples_no_group_size() -> None:
    """XNNPACK's int8 has one scale per output channel: no group size is sampled for it (two
    group sizes would be one model, trained twice); int4 keeps its groups."""
    samples = sample(make_space("slm", "executorch"), 200, seed=5)
    int8 = [(p, c) for p, c in samples if c.compression.weight_bits == 8]
    int4 = [(p, c) for p, c in samples if c.compression.weight_bits == 4]
    assert int8 and int4
    assert all(c.compression.group_size == 0 and "group_size" not in p for p, c in int8)
    assert all(c.compression.group_size >= 32 and "group_size" in p for p, c in int4)
    assert {c.compression.quant_method for _, c in samples} == {"rtn"}
