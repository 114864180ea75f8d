"""`nas.export runtime=executorch`: model.pte next to the model directory, checked against torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from nas.config.compose import load_settings
from nas.errors import run_cli
from nas.executorch.runtime import INSTALL, REQUIRED
from nas.export.__main__ import main
from nas.export.run import run_export
from nas.search.run import run_search
from tests.executorch.helpers import needs_executorch


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """A smoke study of one-layer int4 (group 32) candidates."""
    runs_dir = tmp_path_factory.mktemp("export-pte") / "runs"
    settings = load_settings(
        ["hardware=pixel8", "budget=smoke", f"runs_dir={runs_dir}", f"cache_dir={shared_cache}",
         "quiet=true", "search_space.n_layers=[1]", "search_space.n_heads=[2]",
         "search_space.head_dim=[16]", "search_space.n_kv_heads=[1]",
         "search_space.n_experts=[1]", "search_space.weight_bits=[4]",
         "search_space.group_size=[32]", "search_space.sparsity=[none]",
         "search_space.structured=[false]", "study.name=P",
         "study.n_trials=1"]
    )  # fmt: skip
    run_search(settings)
    return runs_dir


@needs_executorch
def test_model_pte_loads_and_matches_the_exported_config(runs: Path, tmp_path: Path) -> None:
    from nas.executorch.check import compare, tolerance
    from nas.executorch.quantize import quantized

    args = [f"runs_dir={runs}", "study.name=P", "trial=0", f"out={tmp_path}", "onnx=false"]
    (done,) = run_export([*args, "runtime=executorch"])
    files = {p.name for p in done.path.iterdir()}
    assert "model.pte" in files and "model.onnx" not in files
    assert "model.pte" in (done.path / "README.md").read_text()
    trial = json.loads((done.path / "nas_trial.json").read_text())
    check = trial["pte_check"]
    assert check["format"].endswith("int4 per group of 32 weights")
    assert check["delegate"] == "xnnpack" and check["context_len"] == 1024
    assert check["max_abs_logit_diff"] <= check["tolerance"]
    # this study ran with the default runtime: its bpb is ONNX Runtime's int4, and it says so
    assert check["quality_scored_in"] == "matmulnbits"
    # Again, independently: the model the directory describes, built as transformers builds it
    # (the study's seed), in the recipe's format, against the program the directory holds.
    torch.manual_seed(int(trial["identity"]["proxy"]["seed"]))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(done.path)).eval()
    recipe = json.loads((done.path / "compression.json").read_text())["compression"]
    assert (recipe["weight_bits"], recipe["group_size"]) == (4, 32)
    reference = quantized(model, weight_bits=4, group_size=32).model
    agreement = compare(done.path / "model.pte", reference, phase="decode", context_len=1024)
    assert agreement.worst <= tolerance(4, agreement.scale) and agreement.best <= 1e-5
    other = compare(done.path / "model.pte", model, phase="decode", context_len=1024)
    assert other.best > 1e-3  # against the float model no input agrees: the program is int4


def test_the_default_runtime_writes_no_pte(runs: Path, tmp_path: Path) -> None:
    (done,) = run_export([f"runs_dir={runs}", "study.name=P", "trial=0", f"out={tmp_path}",
                          "onnx=false"])  # fmt: skip
    assert not (done.path / "model.pte").exists()
    assert "pte_check" not in json.loads((done.path / "nas_trial.json").read_text())


def test_without_executorch_the_export_is_one_line_and_writes_nothing(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("executorch", *REQUIRED):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [f"runs_dir={runs}", "study.name=P", "trial=0", f"out={out}",
                       "runtime=executorch"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {INSTALL}\n"
    assert not out.exists()


@needs_executorch
def test_an_executorch_studys_export_was_scored_in_the_programs_numerics(
    tmp_path: Path, shared_cache: Path
) -> None:
    runs_dir = tmp_path / "runs"
    settings = load_settings(
        ["hardware=pixel8", "budget=smoke", f"runs_dir={runs_dir}", f"cache_dir={shared_cache}",
         "quiet=true", "runtime=executorch", "search_space.n_layers=[1]",
         "search_space.n_heads=[2]", "search_space.head_dim=[16]", "search_space.n_kv_heads=[1]",
         "search_space.n_experts=[1]", "search_space.weight_bits=[8]",
         "search_space.sparsity=[none]", "search_space.structured=[false]", "study.name=X",
         "study.n_trials=1"]
    )  # fmt: skip
    run_search(settings)
    out = tmp_path / "x"
    (done,) = run_export([f"runs_dir={runs_dir}", "study.name=X", "trial=0", f"out={out}",
                          "onnx=false", "runtime=executorch"])  # fmt: skip
    trial = json.loads((done.path / "nas_trial.json").read_text())
    assert "quality_scored_in" not in trial["pte_check"]
    assert trial["pte_check"]["format"].endswith("int8 per channel weights")
    compression = json.loads((done.path / "compression.json").read_text())
    assert compression["recipe"]["quantization"]["format"] == "xnnpack"
    assert compression["runtime_format"] == trial["pte_check"]["format"]
    card = (done.path / "README.md").read_text()
    assert "int8, one scale per output channel, int8 activations per token (XNNPACK)" in card
