"""`train(directory, settings)`: the plain function behind `python -m nas.train` (HF Trainer)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from nas.cli import split_own
from nas.compression.checkpoint import apply_recipe
from nas.config.rules import at_least, between
from nas.config.schema import ProxySettings
from nas.errors import NasError
from nas.quality.corpus import Corpus, encode, load_corpus, token_bytes
from nas.quality.training import ProxyData, bits_per_byte, resolve_device

log = logging.getLogger("nas.train")

CARRIED = ("README.md", "nas_trial.json")  # copied from DIR to the checkpoint
DEFAULT_STEPS = 200  # without a training target


@dataclass
class TrainSettings:
    """Every `KEY=VALUE` the command takes (the positional DIR is separate)."""

    data: str = "default"
    # None: the study's training target (DIR/nas_trial.json `training_target`), else 200
    steps: int | None = field(default=None, metadata=at_least(1))
    seq_len: int = field(default=128, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    lr: float = field(default=3e-3, metadata=at_least(0.0, exclusive=True))
    warmup_steps: int = field(default=10, metadata=at_least(0))
    weight_decay: float = field(default=0.1, metadata=at_least(0.0))
    corpus_mb: float = field(default=4.0, metadata=at_least(0.0, exclusive=True))
    heldout_fraction: float = field(default=0.05, metadata=between(0.001, 0.5))
    eval_windows: int = field(default=32, metadata=at_least(1))
    compress: bool = True
    out: str = ""  # "" = DIR/trained
    force: bool = False
    device: str = "auto"
    seed: int = field(default=0, metadata=at_least(0))
    quiet: bool = False


@dataclass(frozen=True)
class TrainResult:
    out: Path
    losses: list[tuple[int, float]]
    bpb: float
    bpb_compressed: float | None
    compression: dict[str, Any]
    steps: int = 0

    @property
    def first_loss(self) -> float:
        return self.losses[0][1]

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1]


def parse_args(argv: list[str]) -> tuple[Path, TrainSettings]:
    """DIR and the settings; one-line NasError on a missing DIR, unknown key or bad value."""
    positional = [a for a in argv if "=" not in a]
    if len(positional) != 1:
        raise NasError("pass exactly one model directory: python -m nas.train DIR [KEY=VALUE ...]")
    settings, _ = split_own([a for a in argv if "=" in a], TrainSettings, others=False)
    directory = Path(positional[0])
    if not (directory / "config.json").is_file():
        raise NasError(
            f"{directory} has no config.json; pass a directory written by python -m nas.export"
        )
    if not (directory / "tokenizer.json").is_file():
        raise NasError(f"{directory} has no tokenizer.json; export it again with nas.export")
    return directory, settings


def target_steps(directory: Path, settings: TrainSettings) -> int | None:
    """Steps that reach the study's training target (tokens) at this run's batch and window,
    when the export recorded one."""
    path = directory / "nas_trial.json"
    try:
        target = json.loads(path.read_text()).get("training_target") if path.is_file() else None
    except (OSError, ValueError):
        return None
    tokens = (target or {}).get("tokens")
    if not tokens:
        return None
    return max(1, round(int(tokens) / (settings.batch_size * settings.seq_len)))


class Windows(torch.utils.data.Dataset):
    """Non-overlapping windows of `seq_len` tokens; the model shifts labels itself."""

    def __init__(self, ids: np.ndarray, seq_len: int) -> None:
        n = len(ids) // seq_len
        self.windows = torch.from_numpy(ids[: n * seq_len].astype(np.int64)).view(n, seq_len)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self.windows[index]
        return {"input_ids": window, "labels": window}


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
    losses = _fit(model, Windows(data.train_ids, settings.seq_len), settings, device)
    model = model.to("cpu").float()
    scoring = ProxySettings(
        steps=settings.steps,
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        eval_windows=settings.eval_windows,
    )
    bpb = bits_per_byte(model, data, scoring)
    recipe_path = directory / "compression.json"
    recipe_file = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
    if settings.compress:
        model, applied = apply_recipe(
            model, recipe_file, data=data, proxy=scoring, seed=settings.seed
        )
    else:
        applied = {"applied": False, "reason": "compress=false"}
    bpb_compressed = bits_per_byte(model, data, scoring) if applied["applied"] else None
    result = TrainResult(out, losses, bpb, bpb_compressed, applied, settings.steps)
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
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def _fit(
    model: torch.nn.Module, dataset: Windows, settings: TrainSettings, device: torch.device
) -> list[tuple[int, float]]:
    """The Hugging Face Trainer: AdamW, warm-up then cosine, gradient clipping, progress bar."""
    log_every = max(1, settings.steps // 20)
    with tempfile.TemporaryDirectory(prefix="nas-train-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.lr,
            lr_scheduler_type="cosine",
            warmup_steps=min(settings.warmup_steps, max(0, settings.steps - 1)),
            weight_decay=settings.weight_decay,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            logging_steps=log_every,
            logging_first_step=True,
            save_strategy="no",
            report_to="none",
            use_cpu=device.type == "cpu",
            bf16=device.type == "cuda",
            seed=settings.seed,
            disable_tqdm=settings.quiet,
            dataloader_num_workers=0,
            dataloader_pin_memory=device.type == "cuda",
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    if not losses or not all(math.isfinite(v) for _, v in losses):
        raise NasError(f"training diverged (losses {losses[-3:]}); lower lr=, e.g. lr=1e-3")
    return losses
