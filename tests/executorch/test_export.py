"""ExecuTorch programs of real `transformers` models: the logits torch computes, in each format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.arch import ArchConfig
from nas.errors import NasError
from nas.executorch.check import TOLERANCE, check_pte, compare, tolerance
from nas.executorch.export import export_pte
from nas.executorch.quantize import quantized
from tests.executorch.helpers import CONTEXT, EXACT, FORMATS, SEED, TINY, needs_executorch

pytestmark = needs_executorch


@pytest.mark.parametrize("name", list(FORMATS))
def test_decode_program_matches_torch_in_its_format(name: str, programs, tiny_model) -> None:
    bits, group = FORMATS[name]
    reference = quantized(tiny_model, weight_bits=bits, group_size=group).model
    agreement = compare(programs[name], reference, phase="decode", context_len=CONTEXT)
    assert agreement.worst <= tolerance(bits, agreement.scale)
    assert agreement.best <= EXACT  # the same numerics: float rounding apart, on some input
    worst = check_pte(
        programs[name], tiny_model, weight_bits=bits, group_size=group, context_len=CONTEXT
    )
    assert worst == agreement.worst
    assert b"XnnpackBackend" in programs[name].read_bytes()  # lowered to XNNPACK, not portable


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_the_check_tells_the_float_model_and_another_model_apart(
    name: str, programs, tiny_model
) -> None:
    """Not vacuous: against the float model or another model's quantization, no input agrees."""
    bits, group = FORMATS[name]
    against_float = compare(programs[name], tiny_model, phase="decode", context_len=CONTEXT)
    assert against_float.best > 10 * EXACT
    other = quantized(_model(seed=SEED + 1), weight_bits=bits, group_size=group).model
    against_other = compare(programs[name], other, phase="decode", context_len=CONTEXT)
    assert against_other.worst > TOLERANCE[bits] and against_other.best > 100 * EXACT


def test_quantized_programs_are_smaller_and_keep_what_stays_float(programs, tiny_model) -> None:
    sizes = {name: programs[name].stat().st_size for name in FORMATS}
    # (int4 is not below int8 here: its down_proj stays float, and float embeddings dominate)
    assert sizes["int4"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"]
    quant = quantized(tiny_model, weight_bits=4, group_size=32)
    # down_proj's 80 inputs are no multiple of 32; the LM head and embedding are never quantized
    assert quant.float_layers == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert type(quant.model.model.layers[0].self_attn.q_proj.weight).__name__.startswith("Intx")
    assert type(quant.model.lm_head.weight) is torch.nn.Parameter
    assert type(tiny_model.model.layers[0].self_attn.q_proj.weight) is torch.nn.Parameter


def test_the_decode_program_holds_its_cache_and_writes_it_in_place(programs) -> None:
    from nas.executorch.runtime import load_method

    program = load_method(programs["fp32"], threads=1)
    assert program.input_specs() == [((1, 1), torch.long), ((1, 1), torch.long)]
    step = [torch.tensor([[7]]), torch.tensor([[1]])]  # token 7 at position 1
    after = {}
    for first in (3, 4):  # what position 0 held changes what position 1 attends to
        program.run([torch.tensor([[first]]), torch.tensor([[0]])])
        (after[first],) = program.run(step)
        assert after[first].shape == (1, 1, TINY.vocab_size)
    assert (after[3] - after[4]).abs().max() > 10 * EXACT


def test_a_timing_program_steps_at_the_end_of_its_cache_whatever_position_it_is_fed(
    programs, tmp_path: Path
) -> None:
    from nas.executorch.export import timing_position
    from nas.executorch.runtime import load_method

    path = export_pte(
        TINY, tmp_path / "timing.pte", context_len=CONTEXT, seed=SEED,
        position=timing_position(CONTEXT),
    )  # fmt: skip
    token = torch.tensor([[5]])
    fed = [load_method(path).run([token, torch.tensor([[p]])])[0] for p in (0, 3)]
    # a fresh deployable program fed the last position computes the same step
    at_end = load_method(programs["fp32"]).run([token, torch.tensor([[CONTEXT - 1]])])[0]
    at_start = load_method(programs["fp32"]).run([token, torch.tensor([[0]])])[0]
    assert torch.equal(fed[0], fed[1]) and (fed[0] - at_end).abs().max() <= EXACT
    assert (fed[0] - at_start).abs().max() > 10 * EXACT  # not vacuous: positions differ
    with pytest.raises(NasError, match="cannot run at"):
        export_pte(TINY, tmp_path / "x.pte", context_len=CONTEXT, position=CONTEXT)
    assert not (tmp_path / "x.pte").exists()


def _model(seed: int = SEED) -> torch.nn.Module:
    from nas.quality.models import build_model

    return build_model(TINY, seed=seed).eval()


def test_prefill_program_matches_torch(tmp_path: Path) -> None:
    path = export_pte(TINY, tmp_path / "prefill.pte", context_len=6, phase="prefill", seed=SEED)
    agreement = compare(path, _model(), phase="prefill", context_len=6)
    assert agreement.worst <= EXACT and agreement.scale > 0.1


def test_mixture_of_experts_decode_matches_torch_in_int4(tmp_path: Path) -> None:
    moe = ArchConfig(
        n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, ffn_dim=64, vocab_size=300,
        n_experts=4, experts_per_token=2,
    )  # fmt: skip
    path = export_pte(moe, tmp_path / "moe.pte", weight_bits=4, group_size=32, context_len=12)
    reference = quantized(_moe_model(moe), weight_bits=4, group_size=32).model
    agreement = compare(path, reference, phase="decode", context_len=12)
    assert agreement.worst <= tolerance(4, agreement.scale) and agreement.best <= EXACT


def _moe_model(arch: ArchConfig) -> torch.nn.Module:
    from nas.quality.models import build_model

    return build_model(arch, seed=0).eval()


@pytest.mark.parametrize(
    ("bits", "group", "message"),
    [(3, None, "weight_bits must be 16, 8 or 4"), (4, 16, "multiple of 32"),
     (4, None, "multiple of 32"), (4, 48, "multiple of 32")],
)  # fmt: skip
def test_formats_xnnpack_cannot_run_are_one_line_errors(
    bits: int, group: int | None, message: str, tmp_path: Path
) -> None:
    with pytest.raises(NasError, match=message) as err:
        export_pte(TINY, tmp_path / "x.pte", weight_bits=bits, group_size=group, context_len=8)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.pte").exists()


@needs_executorch
def test_the_predictors_count_of_float_fallback_layers_matches_the_quantizer(tiny_model) -> None:
    from predictors.footprint import unfit_params

    for group in (32, 64):
        quant = quantized(tiny_model, weight_bits=4, group_size=group)
        modules = dict(tiny_model.named_modules())
        left = sum(modules[name].weight.numel() for name in quant.float_layers)
        assert left == unfit_params(TINY, group)
