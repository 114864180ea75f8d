"""Quantization-aware training: the model computes with its quantized weights while training,
gradients reach the float weights, and `convert` leaves exactly the exported int weights."""

from __future__ import annotations

import pytest
import torch

from nas.arch import ArchConfig
from nas.compression import qat
from nas.compression.grid import fake_quantize
from nas.compression.matrices import decoder_layers
from nas.quality.models import build_model

ARCHES = {
    "dense": ArchConfig(2, 4, 2, 16, 64, 96),
    "moe": ArchConfig(2, 4, 2, 16, 32, 96, n_experts=4, experts_per_token=2),
}


def _block_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [
        p.detach().clone()
        for layer in decoder_layers(model)
        for p in layer.parameters()
        if p.dim() in (2, 3)
    ]


@pytest.mark.parametrize("name", sorted(ARCHES))
def test_a_step_trains_through_the_quantizer_and_convert_ships_its_weights(name: str) -> None:
    model = build_model(ARCHES[name], seed=0, max_positions=32)
    attached = qat.attach(model, bits=4, group_size=32)
    assert attached
    # While attached, every block matrix reads as its round-to-nearest value on ORT's grid.
    for module, param in attached:
        shown = getattr(module, param)
        raw = module.parametrizations[param].original
        assert torch.equal(shown, fake_quantize(raw, bits=4, group_size=32))

    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(0))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [m.parametrizations[p].original.detach().clone() for m, p in attached]
    model(input_ids=ids, labels=ids).loss.backward()
    optimiser.step()
    after = [m.parametrizations[p].original.detach() for m, p in attached]
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # STE grads

    with torch.no_grad():
        expected = [fake_quantize(a, bits=4, group_size=32) for a in after]
    qat.convert(attached)
    assert not any(hasattr(m, "parametrizations") and p in m.parametrizations for m, p in attached)
    for weight, want in zip(_block_weights(model), expected, strict=True):
        assert torch.equal(weight, want)


def test_keep_zeros_holds_a_sparsity_pattern_through_training() -> None:
    model = build_model(ARCHES["dense"], seed=0, max_positions=32)
    with torch.no_grad():
        for layer in decoder_layers(model):
            for p in layer.parameters():
                if p.dim() == 2:
                    p[:, ::2] = 0.0
    attached = qat.attach(model, bits=8, group_size=32, keep_zeros=True)
    ids = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(1))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    model(input_ids=ids, labels=ids).loss.backward()
    optimiser.step()
    qat.convert(attached)
    for weight in _block_weights(model):
        if weight.dim() == 2:
            assert torch.all(weight[:, ::2] == 0)
