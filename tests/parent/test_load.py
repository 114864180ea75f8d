"""Loading a parent: its shape, fingerprint and tokenizer from the directory, the weights as the
checkpoint's own class; every bad parent refused in one line saying what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GemmaConfig, GPT2Config

from nas.arch import arch_from_hf, read_hf_config
from nas.errors import NasError
from nas.parent import load_parent, parent_model


@pytest.mark.parametrize("family", ["llama", "qwen3", "qwen3_moe"])
def test_a_parent_loads_with_its_shape_fingerprint_and_weights(
    untrained_parents: dict, family: str
) -> None:
    directory = untrained_parents[family].directory
    parent = load_parent(str(directory))
    assert parent.arch == arch_from_hf(read_hf_config(directory / "config.json"))
    assert len(parent.fingerprint) == 16 and int(parent.fingerprint, 16) >= 0
    assert load_parent(directory).fingerprint == parent.fingerprint  # stable
    assert parent.tokenizer_file == directory / "tokenizer.json"
    model = parent_model(parent)
    assert model.config.model_type == family and not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    if family == "qwen3":  # attention (4 x 16) wider than the residual stream (48)
        assert parent.arch.d_model == 48 and parent.arch.n_heads * parent.arch.head_dim == 64


def test_the_fingerprint_follows_the_weights(untrained_parents: dict, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(untrained_parents["llama"].directory, copy)
    before = load_parent(copy).fingerprint
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert load_parent(copy).fingerprint != before


def _bad_parent(kind: str, good: Path, tmp_path: Path) -> Path:
    """A parent directory with one thing wrong."""
    if kind == "missing":
        return tmp_path / "nowhere"
    if kind == "a file":
        (tmp_path / "model.bin").write_bytes(b"")
        return tmp_path / "model.bin"
    directory = tmp_path / kind
    shutil.copytree(good, directory)
    if kind == "not a model":
        (directory / "config.json").unlink()
    elif kind == "gpt2":
        (directory / "config.json").unlink()
        GPT2Config(n_layer=2, n_head=2, n_embd=32).save_pretrained(directory)
    elif kind == "gemma":  # Gemma-style: scaled embeddings, GeGLU; no child of it is modelled
        (directory / "config.json").unlink()
        GemmaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64).save_pretrained(
            directory
        )
    elif kind == "no weights":
        (directory / "model.safetensors").unlink()
    elif kind == "no tokenizer":
        (directory / "tokenizer.json").unlink()
    elif kind == "mixed experts":  # MoE every 2nd layer: dropping layers would move them
        text = (directory / "config.json").read_text()
        (directory / "config.json").write_text(
            text.replace('"decoder_sparse_step": 1', '"decoder_sparse_step": 2')
        )
    return directory


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("missing", "not found; pass a local Hugging Face checkpoint directory"),
        ("a file", "not found; pass a local Hugging Face checkpoint directory"),
        ("not a model", "holds no config.json, so it is no Hugging Face model directory"),
        ("gpt2", "describes a 'gpt2' model; supported: llama"),
        ("gemma", "describes a 'gemma' model; supported: llama"),
        ("no weights", "has no weights (*.safetensors or pytorch_model.bin)"),
        ("no tokenizer", "has no tokenizer.json; save the parent's tokenizer beside it"),
        ("mixed experts", "MoE every 2 layers with dense layers between is not supported"),
    ],
)
def test_bad_parents_are_refused_in_one_line(
    untrained_parents: dict, tmp_path: Path, kind: str, expect: str
) -> None:
    family = "qwen3_moe" if kind == "mixed experts" else "llama"
    directory = _bad_parent(kind, untrained_parents[family].directory, tmp_path)
    with pytest.raises(NasError) as err:
        load_parent(directory)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_that_does_not_load_is_one_line(
    untrained_parents: dict, tmp_path: Path
) -> None:
    directory = tmp_path / "broken"
    shutil.copytree(untrained_parents["llama"].directory, directory)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    parent = load_parent(directory)  # the light checks pass: the files are there
    with pytest.raises(NasError) as err:
        parent_model(parent)
    assert "does not load with transformers" in str(err.value) and "\n" not in str(err.value)


def test_loading_a_parent_imports_no_torch(untrained_parents: dict) -> None:
    """The settings check refuses a bad parent before torch (seconds to import) loads."""
    directory = untrained_parents["qwen3_moe"].directory
    code = (
        "import sys; from nas.parent import load_parent; "
        f"load_parent({str(directory)!r}); assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
