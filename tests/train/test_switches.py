"""nas.train's switches: qat=true, teacher=DIR and lora=true train (loss falls), save a checkpoint
that reloads, and say so in training.json; QAT ships exactly the quantizer's weights, LoRA leaves
no adapters behind, and a teacher that cannot be used is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from nas.compression.matrices import block_matrices
from nas.compression.prune import measured_sparsity
from nas.compression.quantize import quantize_dequantize
from nas.errors import NasError
from nas.train.args import parse_args
from nas.train.run import train

SMALL = ["steps=24", "warmup_steps=2", "lr=1e-2", "seq_len=32", "batch_size=8", "corpus_mb=1",
         "eval_windows=8", "quiet=true"]  # fmt: skip
INT4 = {"weight_bits": 4, "group_size": 32}


def _run(directory: Path, out: Path, *extra: str):
    _, settings = parse_args([str(directory), *SMALL, f"out={out}", *extra])
    return train(directory, settings)


def _falls(result) -> None:
    losses = [loss for _, loss in result.losses]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses


def _on_grid(model: torch.nn.Module, bits: int, group_size: int) -> bool:
    """Bit for bit what ONNX Runtime's MatMulNBits quantizer ships for these weights."""
    return all(
        torch.equal(quantize_dequantize(m.get(), bits=bits, group_size=group_size), m.get())
        for m in block_matrices(model)
    )


@pytest.mark.parametrize("recipe", ["int4", pytest.param("int8 2:4", marks=pytest.mark.slow)])
def test_qat_ships_exactly_the_quantizers_weights(
    recipe: str, exported: Path, tmp_path: Path, recipe_copy
) -> None:
    directory = recipe_copy(exported, tmp_path / "dir", INT4) if recipe == "int4" else exported
    bits, group = (4, 32) if recipe == "int4" else (8, 32)
    result = _run(directory, tmp_path / "out", "qat=true")
    _falls(result)
    assert result.switches == ("qat",)
    step = result.compression["recipe"]["quantization"]
    assert step["method"] == "qat" and (step["bits"], step["group_size"]) == (bits, group)
    assert result.bpb_compressed == result.bpb  # the trained weights are the shipped ones

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert _on_grid(model, bits, group)
    if recipe == "int8 2:4":  # pruned before training, held at zero through it (rounding to
        # zero may add a few more zeros)
        assert 0.5 <= measured_sparsity(block_matrices(model)) < 0.51
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert record["switches"]["qat"] is True and record["switches"]["lora"] is None
    assert record["compression"]["training"]["qat"]["bits"] == bits


def test_qat_needs_a_quantizing_recipe(exported: Path, tmp_path: Path, recipe_copy) -> None:
    dense = recipe_copy(exported, tmp_path / "dense", {"weight_bits": 16})
    with pytest.raises(NasError, match=r"qat=true trains toward .* a 16-bit recipe; drop qat=true"):
        parse_args([str(dense), "qat=true"])
    with pytest.raises(NasError, match="drop compress=false"):
        parse_args([str(exported), "qat=true", "compress=false"])
    with pytest.raises(NasError, match="pick one"):
        parse_args([str(exported), "qat=true", "lora=true"])


def test_distillation_from_two_teachers(exported: Path, trained: Path, tmp_path: Path) -> None:
    plain = _run(exported, tmp_path / "plain", "steps=2", "compress=false")
    result = _run(exported, tmp_path / "out", f"teacher=[{trained},{trained}]", "compress=false",
                  "steps=16")  # fmt: skip
    _falls(result)
    assert result.switches == ("teacher",)
    # Same seed, same first batch: the first loss is the cross-entropy plus the KL term.
    assert result.first_loss > plain.first_loss + 0.05
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert record["switches"]["teacher"]["dirs"] == [str(trained)] * 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[3, 4, 5]])).logits).all()


def test_a_teacher_that_cannot_teach_is_refused(
    exported: Path, trained: Path, tmp_path: Path
) -> None:
    def refused(teacher: str, match: str) -> None:
        with pytest.raises(NasError, match=match):
            parse_args([str(exported), f"teacher={teacher}"])

    refused(str(tmp_path / "missing"), "is not a directory")
    refused(f"{trained},{exported}", r"has no weights \(\*\.safetensors or pytorch_model\.bin\)")
    refused("[]", "names no directory")
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "vocab_size": 999}))
    refused(str(other), "has a vocabulary of 999 tokens, the student 384")
    (other / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    refused(str(other), "describes a 'gpt2' model")


@pytest.mark.parametrize("recipe", ["int4", pytest.param("int8 2:4", marks=pytest.mark.slow)])
def test_lora_recovery_is_merged_and_quantized_again(
    recipe: str, exported: Path, trained: Path, tmp_path: Path, recipe_copy
) -> None:
    compression = INT4 if recipe == "int4" else {
        "weight_bits": 8, "group_size": 32, "sparsity": 0.5, "sparsity_pattern": "2:4",
    }  # fmt: skip
    directory = recipe_copy(trained, tmp_path / "dir", compression)
    result = _run(directory, tmp_path / "out", "lora=true", "lora_rank=4")
    # The adapters recover some of what compression cost: held-out bits per byte fall.
    start = result.compression["training"]["bpb_before_training"]
    assert result.bpb < start - 0.02, (start, result.bpb, result.losses)
    assert result.switches == ("lora",)
    lora = result.compression["training"]["lora"]
    assert lora["merged"] and 0 < lora["trainable_params"]
    assert result.compression["applied"] is True

    out = tmp_path / "out"
    with safe_open(out / "model.safetensors", "pt") as saved:
        assert not [k for k in saved.keys() if "lora" in k], "adapters left in the checkpoint"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert _on_grid(model, compression["weight_bits"], 32)
    if recipe == "int8 2:4":  # the merged (dense) update does not refill pruned weights
        assert 0.5 <= measured_sparsity(block_matrices(model)) < 0.51
    record = json.loads((out / "training.json").read_text())
    assert record["switches"]["lora"] == {"rank": 4, "alpha": 16.0}


def test_lora_needs_trained_weights(exported: Path) -> None:
    with pytest.raises(NasError, match="lora=true fine-tunes trained weights"):
        parse_args([str(exported), "lora=true"])
