"""nas.train: an exported architecture trains, is compressed as its recipe says, and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from nas.compression.matrices import block_matrices
from nas.compression.prune import measured_sparsity
from nas.errors import NasError, run_cli
from nas.train.__main__ import main
from nas.train.args import TrainSettings, parse_args
from nas.train.run import train

SMALL = ["steps=24", "warmup_steps=2", "lr=1e-2", "seq_len=32", "batch_size=8", "corpus_mb=1",
         "eval_windows=8", "quiet=true"]  # fmt: skip


def test_loss_falls_recipe_is_applied_and_checkpoint_reloads(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ckpt"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(exported), *SMALL, f"out={out}"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "loss " in printed and "compressed (2:4 magnitude sparsity" in printed

    record = json.loads((out / "training.json").read_text())
    losses = [loss for _, loss in record["losses"]]
    assert losses[0] > 5.0  # ~ln(384): an untrained model
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    assert record["compression"]["applied"] is True
    assert record["heldout_bpb_compressed"] > 0

    model = AutoModelForCausalLM.from_pretrained(out)
    trial = json.loads((exported / "nas_trial.json").read_text())
    assert sum(p.numel() for p in model.parameters()) == trial["metrics"]["params"]
    assert measured_sparsity(block_matrices(model)) == pytest.approx(0.5, abs=1e-3)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert torch.isfinite(logits).all()
    assert json.loads((out / "compression.json").read_text())["applied"]["applied"] is True

    # Training the compressed checkpoint further never compresses it a second time.
    again = train(out, TrainSettings(steps=2, seq_len=32, corpus_mb=1, eval_windows=4,
                                     quiet=True, out=str(tmp_path / "again")))  # fmt: skip
    assert again.compression["applied"] is False
    assert "already compressed" in again.compression["reason"]


def test_compress_false_keeps_the_trained_weights(exported: Path, tmp_path: Path) -> None:
    _, settings = parse_args([str(exported), *SMALL, "steps=3", "compress=false",
                              f"out={tmp_path}"])  # fmt: skip
    result = train(exported, settings)
    assert result.bpb_compressed is None and result.compression["reason"] == "compress=false"
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert measured_sparsity(block_matrices(model)) < 0.01


def test_bad_input_is_one_line(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(NasError, match=r"has no config\.json"):
        parse_args([str(tmp_path)])
    with pytest.raises(NasError, match="unknown key 'step'; keys: data, steps"):
        parse_args([str(exported), "step=3"])
    with pytest.raises(NasError, match="steps must be an integer >= 1, got 'many'"):
        parse_args([str(exported), "steps=many"])
    with pytest.raises(NasError, match="steps must be an integer >= 1, got 0"):
        parse_args([str(exported), "steps=0"])
    with pytest.raises(NasError, match="exactly one model directory"):
        parse_args([str(exported), str(exported)])
    (tmp_path / "x").write_text("")
    _, settings = parse_args([str(exported), f"out={tmp_path}"])
    with pytest.raises(NasError, match="not empty; pass force=true"):
        train(exported, settings)
