"""The prune space's quality proxy: every run starts from a child pruned out of a pretrained parent
and learns the parent's logits (Minitron-style logit distillation) besides the corpus.

`Pruning` is what a study holds about its parent: the light `nas.parent.Parent` (a directory and
a fingerprint), its activation importance (computed once on calibration windows of the training
split and cached under the cache folder, named by the parent's fingerprint and the data), and the
distillation settings. The parent's model itself is loaded from its directory once per process,
never pickled: a pool's workers (and machines sharing only the database) each load their own copy
from the same local path. `replay` re-runs a trial's seed-0 run to a rung exactly as the ladder
ran it (batches are a function of seed and step), which is how export gets a child's weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.arch import ArchConfig
from nas.compression.calibration import calibration_windows
from nas.config.schema import ProxyConfig, ProxySettings
from nas.errors import NasError
from nas.fidelity.rungs import Rungs
from nas.parent import Importance, Parent, child_model, importance, parent_model
from nas.quality.training import ProxyData, ProxyRun, Teacher, bits_per_byte, rung_span

CALIBRATION_WINDOWS = 32  # windows of seq_len tokens the importance is scored on


def with_parent_tokenizer(proxy: ProxyConfig, parent: Parent) -> ProxyConfig:
    """The proxy's data settings with the parent's own tokenizer: its embedding is indexed by
    that tokenizer's ids, so no other tokenizer can feed it."""
    return dataclasses.replace(proxy, tokenizer=str(parent.tokenizer_file))


def check_vocabulary(parent: Parent, vocab_size: int) -> None:
    """The tokenizer's ids must all index the parent's embedding (it may hold padding rows)."""
    if vocab_size > parent.arch.vocab_size:
        raise NasError(
            f"{parent.tokenizer_file} has {vocab_size} tokens but the parent's embedding has "
            f"{parent.arch.vocab_size} rows; the tokenizer.json does not belong to this model"
        )


@dataclass
class Pruning:
    """A study's parent, its importance and how children learn from it (see the module doc)."""

    parent: Parent
    importance: Importance
    temperature: float
    weight: float
    _model: torch.nn.Module | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # Workers load the parent from its directory; they are not sent its weights.
        return {**self.__dict__, "_model": None}

    def model(self) -> torch.nn.Module:
        """The parent (fp32, eval, CPU), loaded once per process."""
        if self._model is None:
            self._model = parent_model(self.parent)
        return self._model

    def child(self, arch: ArchConfig) -> torch.nn.Module:
        """A new model shaped `arch`, holding the parent's most important weights."""
        return child_model(self.model(), self.importance, arch)

    def teacher(self) -> Teacher:
        return Teacher(self.model(), self.temperature, self.weight)

    def run(
        self,
        arch: ArchConfig,
        data: ProxyData,
        settings: ProxySettings,
        *,
        seed: int,
        device: torch.device | None = None,
    ) -> ProxyRun:
        """A proxy run of the child shaped `arch`, distilled from the parent."""
        return ProxyRun(
            arch,
            data,
            settings,
            seed=seed,
            device=device,
            start=self.child(arch),
            teacher=self.teacher(),
        )

    def identity(self) -> dict[str, Any]:
        """What decides every result besides the candidate: part of the study's identity and
        of each trial's cache key (a resume with another parent is refused)."""
        return {
            "fingerprint": self.parent.fingerprint,
            "family": self.family,
            "distill": {"temperature": self.temperature, "weight": self.weight},
        }

    @property
    def family(self) -> str:
        """The parent's `model_type` (llama, qwen3, qwen3_moe, ...): the child's too."""
        config = json.loads((self.parent.directory / "config.json").read_text())
        return str(config.get("model_type", ""))

    def reference_bpb(self, data: ProxyData, settings: ProxySettings) -> float:
        """The parent's own held-out bits per byte, measured as every candidate's is."""
        return bits_per_byte(self.model(), data, settings)


def load_pruning(
    parent: Parent,
    data: ProxyData,
    data_info: dict[str, Any],
    settings: ProxySettings,
    cache_dir: Path,
    *,
    temperature: float,
    weight: float,
) -> Pruning:
    """Load the parent's model and its importance (computed once, then read from the cache)."""
    model = parent_model(parent)
    payload = [
        parent.fingerprint,
        data_info["corpus_fingerprint"],
        data_info["vocab_size"],
        settings.seq_len,
        CALIBRATION_WINDOWS,
    ]
    tag = hashlib.sha256(repr(payload).encode()).hexdigest()[:16]
    windows = calibration_windows(
        data.train_ids, seq_len=settings.seq_len, count=CALIBRATION_WINDOWS, seed=0
    )
    scores = importance(model, windows, cache=cache_dir / f"importance-{tag}.pt")
    return Pruning(parent, scores, temperature, weight, _model=model)


def replay(
    pruning: Pruning,
    arch: ArchConfig,
    data: ProxyData,
    settings: ProxySettings,
    rungs: Rungs,
    rung: int,
    seed: int,
) -> ProxyRun:
    """The seed-`seed` run of the child `arch` as the ladder measured it at `rung`: the trunk up
    to that rung, then its decay branch (the trunk's earlier branches do not change it)."""
    run = pruning.run(arch, data, settings, seed=seed)
    trunk, decay = rung_span(rungs, settings, rung)
    run.advance(trunk)
    return run.branch(decay) if decay else run
