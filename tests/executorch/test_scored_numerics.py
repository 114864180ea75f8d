"""Quality under `runtime=executorch` is scored in the numerics the `.pte` runs: torchao's
XNNPACK formats as float weights and input hooks (`scored_in_place`), through `compress`."""

from __future__ import annotations

import copy

import pytest
import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.compression import compress, plan
from nas.config.schema import CompressionSettings
from nas.executorch.check import compare, tolerance
from nas.executorch.quantize import per_token_int8, quantized, scored_in_place
from nas.quality.models import build_model
from tests.executorch.helpers import CONTEXT, FORMATS, TINY, needs_executorch

pytestmark = needs_executorch

MOE = ArchConfig(
    n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=64, vocab_size=300,
    n_experts=4, experts_per_token=2,
)  # fmt: skip
XNNPACK = CompressionSettings(int8_activations=True, quant_format="xnnpack")


def _logits(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_per_token_rounding_is_torchaos_own() -> None:
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        _apply_int8_act_asym_per_token_quant_dequant as theirs,
    )

    x = torch.randn(3, 5, 48, generator=torch.Generator().manual_seed(1)) * 4 + 1
    assert torch.equal(per_token_int8(x), theirs(x))
    assert not torch.equal(per_token_int8(x), x)


@pytest.mark.parametrize("arch", [TINY, MOE], ids=["dense", "moe"])
@pytest.mark.parametrize("name", ["int8", "int4"])
def test_the_scored_model_computes_exactly_what_torchaos_model_does(
    arch: ArchConfig, name: str
) -> None:
    bits, group = FORMATS[name]
    base = build_model(arch, seed=3).eval()
    reference = quantized(base, weight_bits=bits, group_size=group)
    scored = copy.deepcopy(base)
    done = scored_in_place(scored, weight_bits=bits, group_size=group)
    assert torch.equal(_logits(scored), _logits(reference.model))
    assert not torch.equal(_logits(scored), _logits(base))
    assert done.float_layers == reference.float_layers
    # experts and the router are no linear layers: they stay the trained floats, as in a .pte
    for (key, mine), theirs in zip(
        scored.state_dict().items(), base.state_dict().values(), strict=True
    ):
        if ".experts." in key or key.endswith("mlp.gate.weight"):
            assert torch.equal(mine, theirs), key
    for hook in done.hooks:  # what export saves: the program's weights, float inputs
        hook.remove()
    assert not torch.equal(_logits(scored), _logits(reference.model))


def test_the_scored_model_is_what_the_program_runs(programs) -> None:
    """The .pte of TINY in int4 steps through whole sequences within the format's tolerance of
    the scored model, as closely as of torchao's own model."""
    bits, group = FORMATS["int4"]
    scored = build_model(TINY, seed=3).eval()
    scored_in_place(scored, weight_bits=bits, group_size=group)
    agreement = compare(programs["int4"], scored, phase="decode", context_len=CONTEXT)
    assert agreement.worst <= tolerance(bits, agreement.scale)
    fp32 = compare(programs["int4"], build_model(TINY, seed=3).eval(), phase="decode",
                   context_len=CONTEXT)  # fmt: skip
    assert fp32.worst > 10 * agreement.best  # the check tells the numerics apart


def test_compress_scores_xnnpack_and_records_it() -> None:
    candidate = Candidate(TINY, CompressionConfig(weight_bits=8, group_size=32))
    base = build_model(TINY, seed=3).eval()
    done = compress(copy.deepcopy(base), candidate, settings=XNNPACK)
    step = done.recipe.quantization
    assert (step.format, step.group_size, step.activations) == (
        "xnnpack",
        0,
        "int8 per token (asymmetric)",
    )
    assert "torchao" in step.backend and step.float_layers == []
    assert torch.equal(
        _logits(done.model), _logits(quantized(base, weight_bits=8, group_size=None).model)
    )
    ort = compress(
        copy.deepcopy(base), candidate, settings=CompressionSettings(int8_activations=True)
    )
    assert ort.recipe.quantization.format == "matmulnbits"
    assert not torch.equal(_logits(done.model), _logits(ort.model))  # another grid, other numbers
    int4 = plan(Candidate(TINY, CompressionConfig(weight_bits=4, group_size=32)), settings=XNNPACK)
    assert int4.quantization.group_size == 32


def test_methods_on_onnx_runtimes_grid_are_not_scored_as_xnnpack() -> None:
    candidate = Candidate(
        TINY, CompressionConfig(weight_bits=4, group_size=32, quant_method="gptq")
    )
    with pytest.raises(ValueError, match="ONNX Runtime's grid"):
        plan(candidate, settings=XNNPACK)


def test_an_executorch_search_scores_and_records_xnnpack(smoke_overrides: list[str]) -> None:
    import json
    from pathlib import Path

    import optuna

    from nas.config.compose import load_settings
    from nas.search.run import run_search

    cfg = load_settings([
        *smoke_overrides, "runtime=executorch", "search_space.n_layers=[1]",
        "search_space.n_experts=[1]", "search_space.weight_bits=[8]",
        "search_space.sparsity=[none]", "search_space.structured=[false]", "study.name=et",
        "study.n_trials=2",
    ])  # fmt: skip
    run_search(cfg)
    front = json.loads((Path(cfg.runs_dir) / "et" / "pareto.json").read_text())["pareto"]
    assert all(e["metrics"]["bpb"] != e["metrics"]["bpb_uncompressed"] for e in front)
    study = optuna.load_study(study_name="et", storage=cfg.study.storage)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        step = trial.user_attrs["recipe"]["quantization"]
        assert (step["format"], step["group_size"]) == ("xnnpack", 0)
        assert "group_size" not in trial.params  # int8 is per channel: no group sampled


def test_nas_train_applies_an_xnnpack_recipe_in_its_numerics(tmp_path) -> None:
    from nas.compression.checkpoint import apply_recipe, runtime_numerics

    base = build_model(TINY, seed=3).eval()
    comp = CompressionConfig(weight_bits=4, group_size=32)
    step = plan(Candidate(TINY, comp), settings=XNNPACK).to_dict()
    recipe_file = {"compression": comp.to_dict(), "recipe": step}
    model, applied = apply_recipe(copy.deepcopy(base), recipe_file, data=None, proxy=None)
    assert applied["applied"] and "(XNNPACK)" in applied["summary"]
    assert applied["recipe"]["quantization"]["format"] == "xnnpack"
    # torchao's weights, stored as floats; no activation hooks on a checkpoint
    reference = quantized(base, weight_bits=4, group_size=32)
    weights = {name: m.weight.dequantize() for name, m in reference.model.named_modules()
               if hasattr(getattr(m, "weight", None), "qdata")}  # fmt: skip
    assert weights and all(
        torch.equal(model.get_submodule(name).weight, w) for name, w in weights.items()
    )
    assert not any(m._forward_pre_hooks for m in model.modules())
    # scored as the program runs it (what nas.train reports), then a plain checkpoint again
    with runtime_numerics(model, applied):
        assert torch.equal(_logits(model), _logits(reference.model))
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_qat_refuses_a_recipe_scored_in_xnnpack(tmp_path) -> None:
    import json

    from nas.errors import NasError
    from nas.train.args import TrainSettings
    from nas.train.checks import _check_qat

    comp = CompressionConfig(weight_bits=4, group_size=32)
    recipe = {"compression": comp.to_dict(),
              "recipe": plan(Candidate(TINY, comp), settings=XNNPACK).to_dict()}  # fmt: skip
    (tmp_path / "compression.json").write_text(json.dumps(recipe))
    with pytest.raises(NasError, match="qat=true trains on ONNX Runtime's MatMulNBits grid"):
        _check_qat(tmp_path, recipe, TrainSettings(qat=True))
