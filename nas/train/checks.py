"""The switches' checks (`qat=`, `teacher=`, `lora=`), run by `parse_args` before torch loads,
so that a wrong teacher or a recipe a switch cannot use is refused in one line, before anything
is read into memory or written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.arch import arch_from_hf, read_hf_config
from nas.errors import NasError

if TYPE_CHECKING:
    from nas.train.args import TrainSettings


def read_recipe(directory: Path) -> dict[str, Any] | None:
    """DIR/compression.json parsed, or None without one."""
    path = directory / "compression.json"
    if not path.is_file():
        return None
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise NasError(f"{path} cannot be read ({err}); export the directory again") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("compression"), dict):
        raise NasError(f"{path} holds no compression settings; export the directory again")
    return recipe


def has_weights(directory: Path, *, bin_too: bool = False) -> bool:
    """Whether DIR holds weights (`bin_too`: also the older `pytorch_model.bin`)."""
    older = bin_too and (directory / "pytorch_model.bin").is_file()
    return older or any(directory.glob("*.safetensors"))


def check_switches(directory: Path, settings: TrainSettings) -> None:
    """One-line NasError for a switch this directory or these settings cannot run."""
    if settings.qat and settings.lora:
        raise NasError("qat=true and lora=true both replace the final quantization; pick one")
    recipe = read_recipe(directory)
    if settings.qat:
        _check_qat(directory, recipe, settings)
    if settings.lora and not has_weights(directory):
        raise NasError(
            f"lora=true fine-tunes trained weights, but {directory} has no *.safetensors; "
            "train it first (python -m nas.train DIR compress=false) or drop lora=true"
        )
    if settings.teacher.strip() and not settings.teachers:
        raise NasError("teacher= names no directory; pass teacher=DIR or teacher=[A,B]")
    student = read_hf_config(directory / "config.json")
    for teacher in settings.teachers:
        check_teacher(teacher, student, directory / "tokenizer.json")


def _check_qat(directory: Path, recipe: dict[str, Any] | None, settings: TrainSettings) -> None:
    bits = (recipe or {}).get("compression", {}).get("weight_bits", 16)
    if recipe is None or bits >= 16:
        raise NasError(
            f"qat=true trains toward the recipe's integer weights, but {directory} has "
            f"{'no compression.json' if recipe is None else 'a 16-bit recipe'}; drop qat=true"
        )
    if recipe.get("applied"):
        raise NasError(
            f"{directory} holds already quantized weights (compression.json says so); "
            "train the uncompressed checkpoint with qat=true"
        )
    if not settings.compress:
        raise NasError("qat=true ships the recipe's quantized weights; drop compress=false")
    if ((recipe.get("recipe") or {}).get("quantization") or {}).get("format") == "xnnpack":
        raise NasError(
            "qat=true trains on ONNX Runtime's MatMulNBits grid, and this recipe is scored in "
            "ExecuTorch's XNNPACK format; drop qat=true (the recipe is applied round-to-nearest)"
        )


def check_teacher(teacher: Path, student: dict[str, Any], tokenizer_file: Path) -> None:
    """A teacher is a local causal-LM checkpoint of a family the engine reads, with weights and
    the student's vocabulary (the KL compares distributions over the same token ids)."""
    if not teacher.is_dir():
        raise NasError(f"teacher {teacher} is not a directory; pass a local checkpoint directory")
    if not (teacher / "config.json").is_file():
        raise NasError(f"teacher {teacher} has no config.json; pass a Hugging Face checkpoint")
    config = read_hf_config(teacher / "config.json")
    try:
        arch_from_hf(config)
    except NasError as err:
        raise NasError(f"teacher {teacher}: {err}") from None
    if not has_weights(teacher, bin_too=True):
        raise NasError(
            f"teacher {teacher} has no weights (*.safetensors or pytorch_model.bin); pass a "
            "trained checkpoint, e.g. the out= of a python -m nas.train run"
        )
    theirs, ours = config.get("vocab_size"), student.get("vocab_size")
    if theirs != ours:
        raise NasError(
            f"teacher {teacher} has a vocabulary of {theirs} tokens, the student {ours}; "
            "distillation needs the same tokenizer"
        )
    if (teacher / "tokenizer.json").is_file() and _vocab(teacher / "tokenizer.json") != _vocab(
        tokenizer_file
    ):
        raise NasError(
            f"teacher {teacher} has another tokenizer than the student (same size, other "
            "tokens); distillation needs the same tokenizer"
        )


def _vocab(path: Path) -> dict[str, int]:
    from tokenizers import Tokenizer  # light: the Rust library, not transformers

    try:
        return Tokenizer.from_file(str(path)).get_vocab()
    except Exception as err:  # tokenizers raises bare Exceptions for malformed files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NasError(
            f"{path} cannot be read ({reason}); pass a checkpoint with its tokenizer"
        ) from None
