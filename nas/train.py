"""`python -m nas.train DIR data=...`: train an exported architecture with the Hugging Face Trainer.

DIR is a directory written by `python -m nas.export` (or a checkpoint this command saved, to train
further). The corpus is read and split like the search reads it (`data=default` is the Python
standard library's source), tokenized with DIR's tokenizer, and cut into windows of `seq_len`
tokens. After training, held-out bits per byte are measured, the compression recipe in
`DIR/compression.json` is applied where the compression code supports it (and measured again), and
the model is saved where `AutoModelForCausalLM.from_pretrained` loads it, with its tokenizer,
recipe, model card and a `training.json` of the run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from nas.compress_checkpoint import apply_recipe
from nas.corpus import encode, load_corpus, token_bytes
from nas.errors import NasError, run_cli
from nas.proxy import ProxyData, ProxySettings, bits_per_byte, resolve_device

log = logging.getLogger("nas.train")

CARRIED = ("README.md", "nas_trial.json")  # copied from DIR to the checkpoint

USAGE = """usage: python -m nas.train DIR [KEY=VALUE ...]

Trains the model in DIR (a `python -m nas.export` directory, or a checkpoint saved by this
command) with the Hugging Face Trainer, applies DIR/compression.json at the end, and saves a
checkpoint that AutoModelForCausalLM.from_pretrained loads.
  data=PATH          default | a .txt file | a folder of text files (default: Python's stdlib)
  steps=N            optimizer steps (default 200)       seq_len=N     tokens per window (128)
  batch_size=N       windows per step (8)                lr=X          peak learning rate (3e-3)
  warmup_steps=N     linear warm-up, then cosine decay (10)
  corpus_mb=X        read at most this much text (4)     eval_windows=N  held-out windows (32)
  compress=false     keep the trained weights uncompressed
  out=DIR            default: DIR/trained                force=true    write into a non-empty out
  device=NAME        auto | cpu | cuda                   seed=N        (0)
  quiet=true         no progress bar"""


@dataclass
class TrainSettings:
    """Every `KEY=VALUE` the command takes (the positional DIR is separate)."""

    data: str = "default"
    steps: int = 200
    seq_len: int = 128
    batch_size: int = 8
    lr: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    corpus_mb: float = 4.0
    heldout_fraction: float = 0.05
    eval_windows: int = 32
    compress: bool = True
    out: str = ""  # "" = DIR/trained
    force: bool = False
    device: str = "auto"
    seed: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "seq_len", "batch_size", "eval_windows"):
            if getattr(self, name) < 1:
                raise NasError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.corpus_mb <= 0 or not 0 < self.heldout_fraction < 1:
            raise NasError("lr and corpus_mb must be > 0 and heldout_fraction within (0, 1)")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    losses: list[tuple[int, float]]
    bpb: float
    bpb_compressed: float | None
    compression: dict[str, Any]

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
    names = [f.name for f in fields(TrainSettings)]
    pairs = [a for a in argv if "=" in a]
    for pair in pairs:
        if pair.split("=", 1)[0] not in names:
            raise NasError(f"unknown key '{pair.split('=', 1)[0]}'; keys: {', '.join(names)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainSettings), OmegaConf.from_dotlist(pairs))
    except OmegaConfBaseException as err:
        raise NasError(f"bad setting: {str(err).splitlines()[0]}") from None
    settings = TrainSettings(**OmegaConf.to_container(merged))  # type: ignore[arg-type]
    directory = Path(positional[0])
    if not (directory / "config.json").is_file():
        raise NasError(
            f"{directory} has no config.json; pass a directory written by python -m nas.export"
        )
    if not (directory / "tokenizer.json").is_file():
        raise NasError(f"{directory} has no tokenizer.json; export it again with nas.export")
    return directory, settings


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


def train(directory: Path, settings: TrainSettings) -> TrainResult:
    """Train, measure, compress and save; the plain function behind the command."""
    out = _prepare_out(directory, settings)
    tokenizer = AutoTokenizer.from_pretrained(directory)
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
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for name in CARRIED:
        if (directory / name).is_file() and directory.resolve() != out.resolve():
            shutil.copyfile(directory / name, out / name)
    if recipe_file is not None:
        # Marked once applied, so that training this checkpoint further never compresses twice.
        done = {**recipe_file, "applied": applied} if applied["applied"] else recipe_file
        (out / "compression.json").write_text(json.dumps(done, indent=2) + "\n")
    result = TrainResult(out, losses, bpb, bpb_compressed, applied)
    record = {
        "source": str(directory),
        "settings": asdict(settings),
        "corpus": {"source": corpus.source, "fingerprint": corpus.fingerprint},
        "train_tokens_seen": settings.steps * settings.batch_size * settings.seq_len,
        "losses": losses,
        "heldout_bpb": bpb,
        "heldout_bpb_compressed": bpb_compressed,
        "compression": applied,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return result


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


def main(argv: list[str]) -> int:
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    directory, settings = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("nas").setLevel(logging.INFO)
    hf_logging.set_verbosity_warning()
    warnings.filterwarnings("ignore", category=FutureWarning)
    result = train(directory, settings)
    print(
        f"loss {result.first_loss:.3f} -> {result.last_loss:.3f} over {settings.steps} steps; "
        f"held-out bits per byte {result.bpb:.3f}"
    )
    if result.bpb_compressed is not None:
        print(
            f"compressed ({result.compression['summary']}): {result.bpb_compressed:.3f} bits/byte"
        )
    else:
        print(f"compression not applied: {result.compression['reason']}")
    print(f"saved {result.out} (AutoModelForCausalLM.from_pretrained loads it)")
    return 0


if __name__ == "__main__":
    run_cli(main)
