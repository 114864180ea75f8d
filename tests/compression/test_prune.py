"""Sparsity masks: which weights go, how many, and for every matrix of the decoder blocks."""

from __future__ import annotations

import pytest
import torch

from nas.arch import ArchConfig
from nas.compression.matrices import block_matrices
from nas.compression.prune import measured_sparsity, prune_matrices
from nas.quality.models import build_model

DENSE = ArchConfig(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=96, vocab_size=128)
MOE = ArchConfig(
    n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=32, vocab_size=128,
    n_experts=4, experts_per_token=2, moe_every=2, tie_embeddings=False,
)  # fmt: skip


@pytest.mark.parametrize("arch", [DENSE, MOE], ids=["dense", "moe"])
def test_block_matrices_are_exactly_the_quantized_weights(arch: ArchConfig) -> None:
    matrices = block_matrices(build_model(arch, max_positions=32))
    assert sum(m.numel for m in matrices) == arch.matmul_params
    assert not any("embed" in m.name or "lm_head" in m.name for m in matrices)


@pytest.mark.parametrize("arch", [DENSE, MOE], ids=["dense", "moe"])
def test_unstructured_removes_the_smallest_half_of_each_matrix(arch: ArchConfig) -> None:
    model = build_model(arch, max_positions=32)
    matrices = block_matrices(model)
    before = [m.get().clone() for m in matrices]
    prune_matrices(matrices, "unstructured", 0.5)
    assert measured_sparsity(matrices) == pytest.approx(0.5, abs=1e-3)
    for matrix, original in zip(matrices, before, strict=True):
        kept = matrix.get() != 0
        assert kept.float().mean().item() == pytest.approx(0.5, abs=0.01)
        assert original[kept].abs().min() >= original[~kept].abs().max()
        assert torch.equal(matrix.get()[kept], original[kept])  # survivors untouched


@pytest.mark.parametrize("arch", [DENSE, MOE], ids=["dense", "moe"])
def test_two_four_keeps_the_two_largest_of_every_four(arch: ArchConfig) -> None:
    model = build_model(arch, max_positions=32)
    matrices = block_matrices(model)
    before = [m.get().clone() for m in matrices]
    prune_matrices(matrices, "2:4", 0.5)
    for matrix, original in zip(matrices, before, strict=True):
        runs = matrix.get().reshape(-1, 4)
        assert bool(((runs != 0).sum(dim=1) == 2).all())
        top2 = original.reshape(-1, 4).abs().topk(2, dim=1).indices.sort(dim=1).values
        kept = (runs != 0).nonzero()[:, 1].reshape(-1, 2)
        assert torch.equal(kept, top2)


def test_unknown_pattern_and_wrong_ratio_are_refused() -> None:
    matrices = block_matrices(build_model(DENSE, max_positions=32))
    with pytest.raises(ValueError):
        prune_matrices(matrices, "4:8", 0.5)
    with pytest.raises(ValueError):
        prune_matrices(matrices, "2:4", 0.25)
