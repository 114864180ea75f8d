"""A study of "train this shape, then prune to that one" candidates, end to end: the trial trains
the larger shape, prunes it to the priced one and recovers as it chose; pareto.json and the
export name what was trained and removed; `nas.train` on the export trains the larger shape and
prunes it as the trial did."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from transformers import AutoModelForCausalLM

from nas import records
from nas.config.compose import load_settings
from nas.export.run import run_export
from nas.quality.models import count_params
from nas.search.run import run_search
from nas.train.args import TrainSettings
from nas.train.run import train

SHRINK = [
    "search_space.n_layers=[2]",
    "search_space.n_heads=[2]",
    "search_space.head_dim=[16]",
    "search_space.n_kv_heads=[1]",
    "search_space.n_experts=[1]",
    "search_space.weight_bits=[16]",
    "search_space.sparsity=[none]",
    "search_space.structured=[true]",
    "search_space.prune_heads=[0.0]",
    "search_space.prune_experts=[0.0]",
    "search_space.prune_ffn=[0.5]",
    "search_space.prune_layers=[0.5]",
    "search_space.recovery=[distill]",
]


def test_a_shrink_study_trains_prunes_exports_and_trains_again(
    smoke_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_settings([*smoke_overrides, *SHRINK, "study.name=S", "study.n_trials=1"])
    run_search(cfg)
    assert "pruned from" in capsys.readouterr().out  # the front's table names the trained shape
    study = optuna.load_study(study_name="S", storage=str(cfg.study.storage))
    (record,) = [records.read(t) for t in study.trials]
    assert record.counts and record.shrink is not None
    trained, deployed = record.shrink["trained"], record.arch
    assert (trained["n_layers"], deployed["n_layers"]) == (2, 1)
    assert deployed["ffn_dim"] == trained["ffn_dim"] // 2
    structured, recovery = record.recipe["structured"], record.recipe["recovery"]
    assert structured["arch_before"]["n_layers"] == 2 and structured["removed"]["layers"] == 1
    # Distillation from the unpruned model, for a quarter of the proxy's steps.
    assert recovery["distill"] is True and recovery["steps"] == max(1, round(0.25 * 6))

    (entry,) = json.loads((Path(cfg.runs_dir) / "S" / "pareto.json").read_text())["pareto"]
    assert entry["shrink"]["trained"]["n_layers"] == 2 and entry["arch"]["n_layers"] == 1
    csv = (Path(cfg.runs_dir) / "S" / "pareto.csv").read_text()
    assert "pruned_from" in csv.splitlines()[0] and "2L h2/1" in csv

    out = tmp_path / "export"
    (done,) = run_export([f"runs_dir={cfg.runs_dir}", "study.name=S", "trial=0", f"out={out}",
                          "onnx=false"])  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"]) == (2, trained["ffn_dim"])
    assert "then prune it" in (out / "README.md").read_text()

    ckpt = tmp_path / "ckpt"
    settings = TrainSettings(steps=4, warmup_steps=1, seq_len=32, batch_size=4, corpus_mb=1,
                             eval_windows=4, quiet=True, out=str(ckpt))  # fmt: skip
    result = train(out, settings)
    assert result.compression["applied"] is True
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert model.config.num_hidden_layers == 1
    assert model.config.intermediate_size == deployed["ffn_dim"]
    assert count_params(model) == record.metrics["params"] == done.params
