"""A parent checkpoint: a local Hugging Face causal-LM directory that children are pruned from.

`load_parent` does the light checks (files, family) without torch, so a bad parent is refused in
one line before anything is written; `parent_model` loads the weights.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nas.arch import ArchConfig, read_parent
from nas.errors import NasError

if TYPE_CHECKING:  # torch loads only with the weights
    import torch

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
FINGERPRINT_CHUNK = 1 << 20


@dataclass(frozen=True)
class Parent:
    directory: Path
    arch: ArchConfig  # the parent's shape, nas.arch.arch_from_hf(config.json)
    fingerprint: str  # 16 hex chars: sha256 over config.json and the weight files' bytes
    tokenizer_file: Path  # directory / "tokenizer.json"


def weight_files(directory: Path) -> list[Path]:
    return sorted({p for pattern in WEIGHT_PATTERNS for p in directory.glob(pattern)})


def fingerprint(directory: Path) -> str:
    """sha256 over config.json and every weight file (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in [directory / "config.json", *weight_files(directory)]:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(FINGERPRINT_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def load_parent(directory: str | Path) -> Parent:
    """The parent at `directory` after light checks (no torch): a `NasError` with one line
    saying what to do for a missing directory, no config.json, an unsupported family, no weights
    or no tokenizer.json."""
    path = Path(directory).expanduser()
    arch, _ = read_parent(path, f"parent {path}", "pass a local Hugging Face checkpoint directory")
    if not weight_files(path):
        raise NasError(
            f"parent {path} has no weights (*.safetensors or pytorch_model.bin); save the model "
            "with save_pretrained, or download its weights beside config.json"
        )
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        raise NasError(
            f"parent {path} has no tokenizer.json; save the parent's tokenizer beside it "
            "(tokenizer.save_pretrained(DIR))"
        )
    return Parent(path, arch, fingerprint(path), tokenizer)


def parent_model(parent: Parent) -> torch.nn.Module:
    """The parent's weights as a `transformers` causal LM: fp32, eval mode, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            parent.directory, local_files_only=True, dtype=torch.float32
        )
    except Exception as err:  # transformers raises many kinds for a broken checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NasError(
            f"parent {parent.directory} does not load with transformers: {reason}"
        ) from None
    return model.float().eval()
