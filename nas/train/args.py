"""`python -m nas.train`'s own settings and its directory, read and checked before anything
heavy is imported (torch, transformers), so that `--help` and argument errors answer at once."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nas.arch import arch_from_hf, read_hf_config
from nas.cli import split_own
from nas.config.rules import at_least, between
from nas.errors import NasError

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
    # quantization-aware training toward the recipe's bits and group size, converted at the end
    qat: bool = False
    # teacher checkpoint(s) to distil from: DIR, A,B or [A,B] (their logits are averaged)
    teacher: str = ""
    distill_weight: float = field(default=1.0, metadata=at_least(0.0, exclusive=True))
    temperature: float = field(default=2.0, metadata=at_least(0.0, exclusive=True))
    # peft LoRA adapters on the compressed model's projections, merged, then quantized again
    lora: bool = False
    lora_rank: int = field(default=8, metadata=at_least(1))
    lora_alpha: float = field(default=16.0, metadata=at_least(0.0, exclusive=True))

    @property
    def teachers(self) -> list[Path]:
        """`teacher=` as directories: `A`, `A,B` or `[A,B]`."""
        text = self.teacher.strip().removeprefix("[").removesuffix("]")
        return [Path(part.strip()) for part in text.split(",") if part.strip()]

    @property
    def switches(self) -> list[str]:
        """The switches this run trains with, as `training.json` and the summary name them."""
        named = ["qat"] if self.qat else []
        named += ["teacher"] if self.teacher.strip() else []
        return named + (["lora"] if self.lora else [])


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
    arch_from_hf(read_hf_config(directory / "config.json"))  # one line for a garbage config
    _check_tokenizer(directory / "tokenizer.json")
    from nas.config.compose import check_device

    check_device(settings.device)
    from nas.train.checks import check_switches

    check_switches(directory, settings)
    return directory, settings


def _check_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer  # light: the Rust library, not transformers

    try:
        Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises bare Exceptions for malformed files
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NasError(f"{path} cannot be read ({reason}); export the directory again") from None


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
