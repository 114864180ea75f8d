"""The search's settings: one dataclass per config group, registered as Hydra's schema.

`hydra_configs/config.yaml` starts its defaults list with `settings_schema`, so every value a
config file or an override sets is type-checked while Hydra composes it, and `load_settings`
(`nas.config.compose`) turns the result into a `Settings` object and checks every range once.
Commands then pass these objects, not the DictConfig.

Plugin groups (`search_space`, `sampler`, and a proxy's `scorer`) stay mappings with a `_target_`:
their own constructors validate their arguments (`nas.config.compose.build`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from nas.config.rules import FILE_NAME, at_least, between, one_of
from nas.errors import NasError
from nas.hardware import RUNTIMES, HardwareProfile

SCHEMA_NAME = "settings_schema"


@dataclass
class BudgetConfig:
    """How much one study may spend: proxy length, batch, trials, and the space's size caps."""

    name: str = MISSING
    n_trials: int = field(default=MISSING, metadata=at_least(0))
    timeout_s: float = field(default=MISSING, metadata=at_least(1))
    proxy_steps: int = field(default=MISSING, metadata=at_least(1))
    seq_len: int = field(default=MISSING, metadata=at_least(1))
    batch_size: int = field(default=MISSING, metadata=at_least(1))
    eval_windows: int = field(default=MISSING, metadata=at_least(1))
    vocab_size: int = field(default=MISSING, metadata=at_least(258))
    corpus_mb: float = field(default=MISSING, metadata=at_least(0.001))
    caps: dict[str, int] = field(default_factory=dict)
    # Multi-fidelity (nas.fidelity): rung k trains proxy_steps * eta**k steps; a candidate is
    # promoted when it ranks in the top floor(n/eta) of its rung; the top rung trains `seeds` seeds.
    rungs: int = field(default=1, metadata=at_least(1))
    eta: float = field(default=3.0, metadata=at_least(1.5))
    seeds: int = field(default=1, metadata=at_least(1))


@dataclass
class TargetConfig:
    """The training length the exported model will get: the front is judged there."""

    tokens: int | None = field(default=None, metadata=at_least(1))  # None: the top rung's
    # Beyond the top rung (nas.fidelity.judge): `late_slope` reads each candidate's top rung on
    # with a prior fitted on longer runs (nas.fidelity.late_slope); `curve` fits the study's own
    # rung curves (nas.fidelity.target).
    extrapolation: str = field(default="late_slope", metadata=one_of("late_slope", "curve"))


@dataclass
class ProxySettings:
    """One proxy training run: what decides its result (part of every trial's cache key)."""

    steps: int = field(default=MISSING, metadata=at_least(1))
    seq_len: int = field(default=MISSING, metadata=at_least(1))
    batch_size: int = field(default=MISSING, metadata=at_least(1))
    eval_windows: int = field(default=MISSING, metadata=at_least(1))
    lr: float = field(default=3e-3, metadata=at_least(0.0, exclusive=True))
    min_lr_ratio: float = field(default=0.1, metadata=between(0.0, 1.0))
    warmup_steps: int = field(default=5, metadata=at_least(0))
    weight_decay: float = field(default=0.1, metadata=at_least(0.0))
    grad_clip: float = field(default=1.0, metadata=at_least(0.0, exclusive=True))
    # wsd: warm-up, constant rate, then a decay over the last `decay_fraction` of a run (each
    # rung's result is read after such a decay branch); cosine: warm-up, cosine decay.
    schedule: str = field(default="wsd", metadata=one_of("wsd", "cosine"))
    decay_fraction: float = field(default=0.2, metadata=between(0.01, 0.9))
    # How initialisation and learning rate scale with the shape (nas.quality.training):
    # standard (one rate, HF init), depth (residual output projections scaled by 1/sqrt(2L)),
    # width_lr (matrix learning rates scaled by 64 / d_model).
    parameterisation: str = field(
        default="standard", metadata=one_of("standard", "depth", "width_lr")
    )

    @property
    def tokens(self) -> int:
        """Training tokens one proxy run sees."""
        return self.steps * self.batch_size * self.seq_len


@dataclass
class EarlyStopConfig:
    """`proxy.early_stop` (nas.quality.early_stop); off unless `enabled`."""

    enabled: bool = False
    checkpoints: list[float] = field(default_factory=lambda: [0.25, 0.5])
    margin: float = 0.0  # bits per byte the other trial must be better by (< 0: stop more)
    min_gain: float | None = None
    quantile: float = field(default=0.5, metadata=between(0.0, 1.0))


@dataclass
class ProxyConfig(ProxySettings):
    """The `proxy` group: the data, the training run, and the scorer that turns it into quality."""

    name: str = "train"
    corpus: str = "default"
    tokenizer: str = "train"
    vocab_size: int = field(default=MISSING, metadata=at_least(258))  # 256 bytes + 2 specials
    corpus_mb: float = field(default=MISSING, metadata=at_least(0.001))
    heldout_fraction: float = field(default=0.05, metadata=between(0.001, 0.5))
    checkpoints: list[float] | None = None  # learning-curve fractions (proxy=extrapolate)
    horizon: float | None = None  # extrapolate to horizon x steps (proxy=extrapolate)
    scorer: dict[str, Any] = field(default_factory=dict)  # `_target_`: nas.quality.scorers
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    # search_space=prune: every run also learns the parent's logits, loss = cross-entropy +
    # distill_weight x KL(parent || child) at distill_temperature, at the peak rate distill_lr
    # instead of lr (slm studies ignore them). A pretrained child wants a gentler rate than a
    # model trained from scratch: on the tiny test parents 10 steps at 3e-3 left a child worse
    # than it started (4.54 -> 4.62 bpb), at 3e-4 it stayed or improved.
    distill_temperature: float = field(default=2.0, metadata=at_least(0.0, exclusive=True))
    distill_weight: float = field(default=1.0, metadata=at_least(0.0))
    distill_lr: float = field(default=3e-4, metadata=at_least(0.0, exclusive=True))

    @property
    def training(self) -> ProxySettings:
        """Only the training run's settings (what the trial cache key and identity hold)."""
        return ProxySettings(**{f.name: getattr(self, f.name) for f in fields(ProxySettings)})


# The int8/int4 numerics each runtime runs, which compressed candidates are scored in.
QUANT_FORMATS = {"onnxruntime": "matmulnbits", "executorch": "xnnpack"}


@dataclass
class CompressionSettings:
    """The `compression` group: how compressed models are scored (defaults: no recovery
    fine-tune, fp32 activations)."""

    recovery_steps: int = field(default=0, metadata=at_least(0))
    recovery_lr: float = field(default=3e-4, metadata=at_least(0.0, exclusive=True))
    distill: bool = False  # recovery learns from the uncompressed model as teacher
    temperature: float = field(default=2.0, metadata=at_least(0.0, exclusive=True))
    # Score (and export, calibrate, price) int8/int4 models with activations quantized to int8
    # per block of group_size, as ONNX Runtime's fast CPU kernels run them (accuracy_level=4).
    # None: the hardware's runtime decides (`HardwareProfile.int8_activations`: on for CPUs),
    # resolved when the settings load; false is the explicit weight-only, fp32-compute format.
    int8_activations: bool | None = None
    # Whose int8/int4 numerics quality is scored in: `matmulnbits` (ONNX Runtime's MatMulNBits
    # grid, the methods rtn/gptq/awq) or `xnnpack` (ExecuTorch's XNNPACK through torchao: int8
    # per channel or int4 per group, int8 activations per token, experts float; rtn only).
    # None: the runtime group's, resolved when the settings load (`QUANT_FORMATS`).
    quant_format: str | None = field(default=None, metadata=one_of(*QUANT_FORMATS.values()))
    # Calibration-based methods (gptq, awq, wanda, sparsegpt): windows of the proxy's seq_len
    # drawn from the training split; GPTQ's column order and Hessian damping (also SparseGPT's).
    calibration_windows: int = field(default=32, metadata=at_least(1))
    act_order: bool = True
    damp: float = field(default=0.01, metadata=between(0.0, 1.0))
    # A candidate trained at one shape and pruned to another (the `slm` space's prune_* axes)
    # recovers for this share of the proxy run's steps when it chose a fine-tune or distillation.
    shrink_recovery_share: float = field(default=0.25, metadata=between(0.0, 1.0))


DELEGATES = {"onnxruntime": None, "executorch": "xnnpack"}  # the one delegate each one takes


@dataclass
class RuntimeConfig:
    """The `runtime` group: which runtime models are exported for (`nas.export` writes
    model.onnx for ONNX Runtime, model.pte too for ExecuTorch)."""

    name: str = field(default="onnxruntime", metadata=one_of(*RUNTIMES))
    delegate: str | None = field(default=None, metadata=one_of("xnnpack"))  # ExecuTorch's backend


@dataclass
class StudyConfig:
    """The study's identity, storage, and how many processes add trials to it."""

    name: str = field(default=MISSING, metadata=FILE_NAME)  # a folder name under runs_dir
    n_trials: int = field(default=MISSING, metadata=at_least(0))
    timeout_s: float = field(default=MISSING, metadata=at_least(1))
    storage: str = MISSING
    workers: int = field(default=1, metadata=at_least(1))
    threads: Any = "auto"  # torch threads per worker: "auto" (cores // workers) or >= 1
    retries: int = field(default=2, metadata=at_least(0))
    heartbeat_s: int = field(default=10, metadata=at_least(1))
    grace_s: int = field(default=60, metadata=at_least(2))


@dataclass
class Settings:
    """Everything `python -m nas.search` is configured with (hydra_configs/config.yaml)."""

    hardware: HardwareProfile = field(default_factory=HardwareProfile)
    search_space: dict[str, Any] = field(default_factory=dict)  # `_target_`: search_spaces
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    sampler: dict[str, Any] = field(default_factory=dict)  # `_target_`: nas.samplers, optuna
    study: StudyConfig = field(default_factory=StudyConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    seed: int = field(default=0, metadata=at_least(0))
    runs_dir: str = "runs"
    cache_dir: str = "${runs_dir}/.cache"
    device: str = "auto"
    quiet: bool = False

    @property
    def out_dir(self) -> Path:
        return Path(self.runs_dir) / self.study.name


def check_settings(settings: Settings) -> None:
    """What no single field's range says: rules across fields of the search's settings."""
    threads = settings.study.threads
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise NasError(f"study.threads must be an integer >= 1 or auto, got {threads!r}")
    if threads != "auto" and threads < 1:
        raise NasError(f"study.threads must be an integer >= 1 or auto, got {threads!r}")
    workers, storage = settings.study.workers, settings.study.storage
    if workers > 1 and storage.startswith("sqlite:"):
        raise NasError(
            f"study.workers={workers} needs a storage that takes several writers, and SQLite "
            f"does not: add study.storage=journal:///{settings.out_dir}/study.journal "
            "(one machine) or study.storage=postgresql://... (many machines)"
        )
    runtime = settings.runtime
    if runtime.delegate != DELEGATES[runtime.name]:
        wanted = DELEGATES[runtime.name]
        raise NasError(
            f"runtime.delegate={runtime.delegate or 'null'} does not go with "
            f"runtime={runtime.name}; "
            + (f"use runtime.delegate={wanted}" if wanted else "leave runtime.delegate unset")
        )
    _check_quant_format(settings)
    if settings.proxy.schedule == "cosine" and settings.budget.rungs > 1:
        raise NasError(
            f"proxy.schedule=cosine decays over one run and cannot carry on to "
            f"budget.rungs={settings.budget.rungs}: use proxy.schedule=wsd, or budget.rungs=1 "
            "for a single-fidelity search"
        )


def _check_quant_format(settings: Settings) -> None:
    """Compressed candidates are scored in the numerics of the runtime they are priced and
    exported for, and XNNPACK's have neither a weight-only form nor the ONNX Runtime grid that
    GPTQ and AWQ choose weights on."""
    comp, runtime = settings.compression, settings.runtime.name
    if comp.quant_format != QUANT_FORMATS[runtime]:
        raise NasError(
            f"compression.quant_format={comp.quant_format} is not what runtime={runtime} runs "
            f"({QUANT_FORMATS[runtime]}): leave compression.quant_format unset"
        )
    space = settings.search_space if isinstance(settings.search_space, dict) else {}
    if comp.quant_format != "xnnpack":
        if space.get("per_channel_bits"):
            raise NasError(
                "search_space.per_channel_bits is for ExecuTorch's int8 (one scale per output "
                f"channel); runtime={runtime} quantizes in groups: drop it"
            )
        return
    if comp.int8_activations is False:
        raise NasError(
            "compression.int8_activations=false is ONNX Runtime's weight-only format; ExecuTorch's "
            "XNNPACK runs int8/int4 weights with int8 activations: leave it unset"
        )
    methods = space.get("quant_method", ())
    methods = [methods] if isinstance(methods, str) else list(methods or ())
    others = [m for m in methods if m != "rtn"]
    if others:
        raise NasError(
            f"search_space.quant_method={others[0]} chooses weights on ONNX Runtime's grid, "
            "not XNNPACK's: runtime=executorch scores round-to-nearest only "
            "(search_space.quant_method=[rtn])"
        )


def register() -> None:
    """Make `settings_schema` known to Hydra (idempotent)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=Settings)
