"""`train(directory, settings)`: the plain function behind `python -m nas.train` (HF Trainer)."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from nas.config.schema import ProxySettings
from nas.errors import NasError
from nas.quality.corpus import Corpus, encode, load_corpus, token_bytes
from nas.quality.training import ProxyData, resolve_device
from nas.train import flows
from nas.train.args import DEFAULT_STEPS, TrainSettings, target_steps
from nas.train.checks import check_switches, read_recipe
from nas.train.fit import Windows

log = logging.getLogger("nas.train")

CARRIED = ("README.md", "nas_trial.json")  # copied from DIR to the checkpoint


@dataclass(frozen=True)
class TrainResult:
    out: Path
    losses: list[tuple[int, float]]
    bpb: float
    bpb_compressed: float | None
    compression: dict[str, Any]
    steps: int = 0
    switches: tuple[str, ...] = ()

    @property
    def first_loss(self) -> float:
        return self.losses[0][1]

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1]


def _load_model(directory: Path, seed: int) -> torch.nn.Module:
    """Trained weights when DIR has them (train further), else a fresh init of its config."""
    if any(directory.glob("*.safetensors")):
        return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory))


def _prepare_out(directory: Path, settings: TrainSettings) -> Path:
    out = Path(settings.out) if settings.out else directory / "trained"
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not settings.force:
        raise NasError(f"out={out} exists and is not empty; pass force=true or another out=DIR")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NasError(f"cannot write {out}: {err.strerror}; pass out=DIR") from None
    return out


def _data(tokenizer: Any, settings: TrainSettings) -> tuple[ProxyData, Corpus]:
    """The corpus, split as the search splits it, as token streams of DIR's tokenizer."""
    corpus = load_corpus(
        settings.data, max_mb=settings.corpus_mb, heldout_fraction=settings.heldout_fraction
    )
    backend = tokenizer.backend_tokenizer
    data = ProxyData(
        train_ids=encode(backend, corpus.train),
        heldout_ids=encode(backend, corpus.heldout),
        token_bytes=token_bytes(backend),
    )
    if len(data.train_ids) < 2 * settings.seq_len or len(data.heldout_ids) <= settings.seq_len:
        raise NasError(
            f"corpus {corpus.source} is too short for seq_len={settings.seq_len}: "
            f"{len(data.train_ids)} training and {len(data.heldout_ids)} held-out tokens"
        )
    return data, corpus


def train(directory: Path, settings: TrainSettings) -> TrainResult:
    """Train, measure, compress and save; the plain function behind the command."""
    if settings.steps is None:  # to the study's target, when the export recorded one
        settings = replace(settings, steps=target_steps(directory, settings) or DEFAULT_STEPS)
    check_switches(directory, settings)  # parse_args did, unless called directly
    out = _prepare_out(directory, settings)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    data, corpus = _data(tokenizer, settings)
    model = _load_model(directory, settings.seed)
    if model.config.vocab_size != len(tokenizer):
        raise NasError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens, the model "
            f"{model.config.vocab_size}; export the directory again"
        )
    device = resolve_device(settings.device)
    log.info(
        "training %s (%s parameters) on %s: %d steps x %d x %d tokens of %s (%d training tokens)",
        type(model).__name__,
        f"{sum(p.numel() for p in model.parameters()):,}",
        device,
        settings.steps,
        settings.batch_size,
        settings.seq_len,
        corpus.source,
        len(data.train_ids),
    )
    run = flows.Run(
        data=data,
        dataset=Windows(data.train_ids, settings.seq_len),
        scoring=ProxySettings(
            steps=settings.steps,
            seq_len=settings.seq_len,
            batch_size=settings.batch_size,
            eval_windows=settings.eval_windows,
        ),
        settings=settings,
        device=device,
        recipe_file=read_recipe(directory),
    )
    if settings.teachers:
        from nas.train.switches import load_teachers

        run.teachers = load_teachers(settings.teachers, device)
    flow = flows.qat if settings.qat else flows.lora if settings.lora else flows.plain
    done = flow(model, run)
    result = TrainResult(
        out,
        done.losses,
        done.bpb,
        done.bpb_compressed,
        done.compression,
        settings.steps,
        tuple(settings.switches),
    )
    model, recipe_file = done.model, run.recipe_file
    _save(model, tokenizer, directory, settings, corpus, recipe_file, result)
    return result


def _save(
    model: torch.nn.Module,
    tokenizer: Any,
    directory: Path,
    settings: TrainSettings,
    corpus: Corpus,
    recipe_file: dict[str, Any] | None,
    result: TrainResult,
) -> None:
    """The checkpoint, its tokenizer, card, recipe and `training.json`, in `result.out`."""
    out, applied = result.out, result.compression
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name in CARRIED:
        if (directory / name).is_file() and directory.resolve() != out.resolve():
            shutil.copyfile(directory / name, out / name)
    if recipe_file is not None:
        # Marked once applied, so that training this checkpoint further never compresses twice.
        done = {**recipe_file, "applied": applied} if applied["applied"] else recipe_file
        (out / "compression.json").write_text(json.dumps(done, indent=2) + "\n")
    record = {
        "source": str(directory),
        "settings": asdict(settings),
        "corpus": {"source": corpus.source, "fingerprint": corpus.fingerprint},
        "train_tokens_seen": settings.steps * settings.batch_size * settings.seq_len,
        "losses": result.losses,
        "heldout_bpb": result.bpb,
        "heldout_bpb_compressed": result.bpb_compressed,
        "compression": applied,
        "switches": _switches(settings),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def _switches(settings: TrainSettings) -> dict[str, Any]:
    """Which of qat / teacher / lora ran, with their settings."""
    teachers = [str(t) for t in settings.teachers]
    return {
        "qat": settings.qat,
        "teacher": {
            "dirs": teachers,
            "distill_weight": settings.distill_weight,
            "temperature": settings.temperature,
            "combine": "averaged logits (BabyLLaMA), one KL per step",
        }
        if teachers
        else None,
        "lora": {"rank": settings.lora_rank, "alpha": settings.lora_alpha}
        if settings.lora
        else None,
    }
