"""Wanda and SparseGPT: the pattern they promise, and outputs reconstructed no worse than
magnitude pruning's on the calibration activations."""

from __future__ import annotations

import copy

import pytest
import torch

from nas.arch import Candidate, CompressionConfig
from nas.compression import compress
from nas.compression.calibration import Stats, layer_stats, reconstruction_error
from nas.compression.matrices import Matrix, block_matrices
from nas.compression.prune import sparsity_masks
from nas.compression.sparsegpt import sparsegpt_prune
from nas.compression.wanda import keep_mask, wanda_mask
from tests.compression.test_gptq import ARCHES, _outlier_stats

PATTERNS = ["unstructured", "2:4"]


def _magnitude(weight: torch.Tensor, pattern: str) -> torch.Tensor:
    """What `prune_method=magnitude` ships (NNI per matrix; torch.ao 2:4)."""
    (mask,) = sparsity_masks([Matrix("w", torch.nn.Parameter(weight.clone()))], pattern, 0.5)
    return weight * mask


def _prune(method: str, weight: torch.Tensor, stats: Stats, pattern: str) -> torch.Tensor:
    if method == "wanda":
        return weight * wanda_mask(weight, stats, pattern, 0.5)
    return sparsegpt_prune(weight, stats, pattern, 0.5)[0]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_output_error_below_magnitude(method: str, pattern: str) -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 256)
    stats = _outlier_stats(256)
    pruned = _prune(method, weight, stats, pattern)
    magnitude = _magnitude(weight, pattern)
    assert reconstruction_error(weight, pruned, stats) < 0.8 * reconstruction_error(
        weight, magnitude, stats
    )


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_half_of_the_weights_go_in_the_promised_pattern(method: str, pattern: str) -> None:
    torch.manual_seed(1)
    weight = torch.randn(32, 192)
    kept = _prune(method, weight, _outlier_stats(192, 1), pattern) != 0
    assert kept.float().mean().item() == pytest.approx(0.5, abs=1e-3)
    if pattern == "2:4":
        assert bool((kept.reshape(32, -1, 4).sum(-1) == 2).all())
    elif method == "wanda":
        assert bool((kept.sum(1) == 96).all())  # Wanda compares within each output row


def test_wanda_keeps_small_weights_on_loud_channels() -> None:
    weight = torch.ones(1, 8)
    weight[0, 0] = 0.1  # small weight ...
    stats = Stats.empty(8)
    stats.add(torch.ones(4, 8) * torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 1]))  # ... loud input
    assert bool(wanda_mask(weight, stats, "unstructured", 0.5)[0, 0])
    assert not bool(keep_mask(weight.abs(), "unstructured", 0.5)[0, 0])


@pytest.mark.parametrize("name", ARCHES)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_compress_records_method_and_measured_zeros(name: str, method: str) -> None:
    from nas.quality.models import build_model

    arch = ARCHES[name]
    model = build_model(arch, seed=1, max_positions=32)
    comp = CompressionConfig(sparsity=0.5, sparsity_pattern="2:4", prune_method=method)
    done = compress(model, Candidate(arch, comp), calibration=torch.randint(0, 96, (4, 32)))
    step = done.recipe.sparsity
    assert step.method == method and step.measured == pytest.approx(0.5, abs=1e-3)
    assert step.calibration["windows"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_trained_models_reconstruct_better_than_magnitude(trained, method: str, pattern: str):
    """The defining property on a trained model, on each layer's calibration inputs: SparseGPT's
    output error is below magnitude pruning's (same pattern, same 50%) for every matrix; raw
    Wanda's summed over the model's matrices (on these 2-layer models it loses on about half of
    the attention matrices, where inputs correlate: `compress` keeps magnitude there)."""
    matrices = block_matrices(trained.model)
    total_method = total_magnitude = 0.0
    for index in range(trained.arch.n_layers):
        stats = layer_stats(trained.model, trained.calibration, index)
        for matrix in (m for m in matrices if m.name.startswith(f"model.layers.{index}.")):
            if matrix.label not in stats:
                continue
            w, st = matrix.get(), stats[matrix.label]
            e_method = reconstruction_error(w, _prune(method, w, st, pattern), st)
            e_magnitude = reconstruction_error(w, _magnitude(w, pattern), st)
            if method == "sparsegpt":
                assert e_method <= e_magnitude, (matrix.label, e_method, e_magnitude)
            total_method, total_magnitude = total_method + e_method, total_magnitude + e_magnitude
    assert total_method < total_magnitude


def test_wanda_minimises_its_own_score_per_row() -> None:
    """What Wanda guarantees: with the same count per row, the removed weights' summed
    |W_ij|^2 ||X_j||^2 (the output error when inputs are uncorrelated) is the smallest."""
    torch.manual_seed(5)
    weight, stats = torch.randn(16, 64), _outlier_stats(64, 5)
    norms = stats.sq_norms.float()

    def cost(mask: torch.Tensor) -> torch.Tensor:
        return ((weight**2) * norms * (~mask)).sum(1)

    wanda = wanda_mask(weight, stats, "unstructured", 0.5)
    row_magnitude = keep_mask(weight.abs(), "unstructured", 0.5)
    assert bool((cost(wanda) <= cost(row_magnitude) + 1e-6).all())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_trained_models_shipped_matrices_never_worse_than_magnitude(trained, method: str):
    """What `compress` ships keeps magnitude pruning where that fits a matrix better: every
    matrix of the first layer (whose inputs pruning cannot change) is at most magnitude's."""
    stats = layer_stats(trained.model, trained.calibration, 0)
    before = {m.label: m.get().clone() for m in block_matrices(trained.model)}
    comp = CompressionConfig(sparsity=0.5, sparsity_pattern="unstructured", prune_method=method)
    done = compress(
        copy.deepcopy(trained.model), Candidate(trained.arch, comp), calibration=trained.calibration
    )
    for matrix in block_matrices(done.model):
        if not matrix.name.startswith("model.layers.0.") or matrix.label not in stats:
            continue
        w, st = before[matrix.label], stats[matrix.label]
        magnitude = reconstruction_error(w, _magnitude(w, "unstructured"), st)
        assert reconstruction_error(w, matrix.get(), st) <= magnitude * (1 + 1e-6)
    print(method, done.recipe.sparsity.magnitude_matrices)
