"""The expensive objective: a short training run on real text, scored in held-out bits per byte.

Bits per byte = (summed next-token negative log-likelihood in bits) / (UTF-8 bytes of the scored
tokens); it does not depend on the tokenizer, so models with different vocabularies compare.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from nas.arch import ArchConfig
from nas.config.schema import ProxySettings
from nas.fidelity.rungs import Rungs, decay_steps
from nas.quality.models import build_model


class ProxyDiverged(RuntimeError):
    """The training loss became NaN or infinite: the trial fails with this reason."""


@dataclass(frozen=True)
class ProxyData:
    """Token streams and the byte length of every token id."""

    train_ids: np.ndarray
    heldout_ids: np.ndarray
    token_bytes: np.ndarray

    def uniform_bpb(self, settings: ProxySettings) -> float:
        """Bits per byte of a model that knows nothing (uniform over the vocabulary): the value
        recorded for candidates that are infeasible and therefore never trained."""
        targets = eval_windows(self.heldout_ids, settings)[:, 1:]
        scored_bytes = int(self.token_bytes[targets].sum())
        return targets.size * math.log2(len(self.token_bytes)) / max(1, scored_bytes)


@dataclass
class ProxyResult:
    bpb: float
    train_loss: float
    seconds: float
    tokens: int
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss in nats)
    # (steps done, held-out bpb, seconds so far) at each requested checkpoint, for learning-curve
    # proxies and early stopping; `stopped_at` is the step count where `on_checkpoint` stopped it.
    checkpoints: list[tuple[int, float, float]] = field(default_factory=list)
    stopped_at: int | None = None
    # The trained model (eval mode), for post-training steps such as compression.
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_factor(step: int, settings: ProxySettings) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` over `settings.steps`."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine


def stable_factor(step: int, settings: ProxySettings) -> float:
    """The trunk of warmup-stable-decay: linear warm-up, then the constant peak rate."""
    return (step + 1) / settings.warmup_steps if step < settings.warmup_steps else 1.0


def decay_factor(done: int, length: int, settings: ProxySettings) -> float:
    """Step `done` (0-based) of a decay branch of `length` steps: linear to `min_lr_ratio`."""
    return 1.0 - (1.0 - settings.min_lr_ratio) * (done + 1) / length


def rung_span(rungs: Rungs, settings: ProxySettings, rung: int) -> tuple[int, int]:
    """(trunk steps, decay steps) of rung `rung`: wsd reads each rung after a decay branch off
    the trunk; cosine decays over one run to its own end (no branch)."""
    if settings.schedule == "wsd":
        return rungs.trunk(rung), rungs.decay(rung)
    return rungs.total(rung), 0


def batch_at(ids: np.ndarray, settings: ProxySettings, seed: int, step: int) -> torch.Tensor:
    """Step `step`'s training windows: a function of (seed, step) alone, so that a run carried
    on from a checkpoint, or branched off, sees exactly the batches a fresh run would."""
    rng = np.random.default_rng([seed, step])
    span = settings.seq_len + 1
    starts = rng.integers(0, len(ids) - span, size=settings.batch_size)
    return torch.from_numpy(np.stack([ids[s : s + span] for s in starts]).astype(np.int64))


def eval_windows(ids: np.ndarray, settings: ProxySettings) -> np.ndarray:
    """Non-overlapping held-out windows of seq_len + 1 tokens, the same for every candidate."""
    span = settings.seq_len + 1
    n = min(settings.eval_windows, len(ids) // span)
    if n < 1:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than one window ({span})")
    return ids[: n * span].reshape(n, span).astype(np.int64)


@torch.no_grad()
def bits_per_byte(model: torch.nn.Module, data: ProxyData, settings: ProxySettings) -> float:
    model.eval()
    device = next(model.parameters()).device
    windows = torch.from_numpy(eval_windows(data.heldout_ids, settings))
    nll_nats = 0.0
    for chunk in windows.split(max(1, settings.batch_size)):
        chunk = chunk.to(device)
        logits = model(input_ids=chunk[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="sum"
        )
        nll_nats += loss.item()
    scored_bytes = int(data.token_bytes[windows[:, 1:].numpy()].sum())
    model.train()
    return nll_nats / math.log(2) / max(1, scored_bytes)


WIDTH_LR_BASE = 64  # parameterisation=width_lr: matrices of a 64-wide model get the full rate
RESIDUAL_OUTPUTS = ("o_proj", "down_proj")  # what each block adds to the residual stream


def _optimizer(
    model: torch.nn.Module, settings: ProxySettings, arch: ArchConfig
) -> torch.optim.Optimizer:
    """AdamW, no weight decay on norms; the learning rate is set before every step, times each
    group's `lr_scale` (1, except for hidden matrices under parameterisation=width_lr)."""
    scale = WIDTH_LR_BASE / arch.d_model if settings.parameterisation == "width_lr" else 1.0
    embeddings = {
        id(p) for name, p in model.named_parameters() if "embed" in name or "lm_head" in name
    }
    matrices = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embeddings]
    tables = [p for p in model.parameters() if p.dim() >= 2 and id(p) in embeddings]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": matrices, "weight_decay": settings.weight_decay, "lr_scale": scale},
        {"params": tables, "weight_decay": settings.weight_decay, "lr_scale": 1.0},
        {"params": vectors, "lr_scale": 1.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=settings.lr, betas=(0.9, 0.95), weight_decay=0.0
    )


@torch.no_grad()
def _scale_residual_outputs(model: torch.nn.Module, n_layers: int) -> None:
    """GPT-2's depth scaling: each block's output projections start 1/sqrt(2 L) as large, so
    the residual stream's variance at initialisation does not grow with depth."""
    for name, param in model.named_parameters():
        if any(part in name for part in RESIDUAL_OUTPUTS):
            param.mul_(1.0 / math.sqrt(2 * n_layers))


@dataclass(frozen=True)
class Teacher:
    """A model whose next-token distributions a run also learns (logit distillation): each
    step's loss is the cross-entropy plus `weight` x `distillation_loss` at `temperature`."""

    model: torch.nn.Module
    temperature: float = 2.0
    weight: float = 1.0


class ProxyRun:
    """One candidate's training run, advanced step by step, that can be branched off.

    `advance(n)` trains up to step n at the schedule's rate; `branch(d)` copies the model and
    optimizer and decays the rate over the next d steps (warmup-stable-decay), leaving this run
    as it was; `evaluate()` measures held-out bits per byte. A fresh `train_proxy` run and a run
    carried on from a checkpoint compute the same thing (`batch_at`).

    `start` trains that model (e.g. a child pruned out of a pretrained parent; the run owns it
    from then on) instead of a freshly initialised `arch`; `teacher` adds its distillation loss.
    """

    def __init__(
        self,
        arch: ArchConfig,
        data: ProxyData,
        settings: ProxySettings,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        start: torch.nn.Module | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        self.data, self.settings, self.seed = data, settings, seed
        device = device or torch.device("cpu")
        if start is None:
            self.model = build_model(arch, seed=seed, max_positions=settings.seq_len).to(device)
            if settings.parameterisation == "depth":
                _scale_residual_outputs(self.model, arch.n_layers)
        else:  # trained weights: no initialisation rule applies
            self.model = start.to(device)
        self.teacher = teacher
        if teacher is not None:
            teacher.model.to(device).eval()
        self.model.train()
        self.optimizer = _optimizer(self.model, settings, arch)
        self.step = 0
        self.loss = float("nan")
        self.curve: list[tuple[int, float]] = []  # (step, train loss in nats)
        self.log_every = max(1, settings.steps // 20)

    def _rate(self, step: int) -> float:
        if self.settings.schedule == "cosine":
            return cosine_factor(step, self.settings)
        return stable_factor(step, self.settings)

    def _step(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.lr * factor * group["lr_scale"]
        batch = batch_at(self.data.train_ids, self.settings, self.seed, self.step)
        self.loss = _train_step(
            self.model, batch.to(self.device), self.optimizer, self.settings, self.teacher
        )
        if not math.isfinite(self.loss):
            raise ProxyDiverged(f"training loss became {self.loss} at step {self.step}")
        if self.step % self.log_every == 0:
            self.curve.append((self.step, round(self.loss, 5)))
        self.step += 1

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def advance(self, to_step: int) -> None:
        """Train the trunk up to `to_step` steps."""
        while self.step < to_step:
            self._step(self._rate(self.step))

    def branch(self, length: int) -> ProxyRun:
        """A copy of this run with its rate decayed over the next `length` steps."""
        branch = copy.copy(self)
        branch.model, branch.optimizer = copy.deepcopy((self.model, self.optimizer))
        branch.curve = list(self.curve)
        for done in range(length):
            branch._step(decay_factor(done, length, self.settings))
        return branch

    def evaluate(self) -> float:
        bpb = bits_per_byte(self.model, self.data, self.settings)
        if not math.isfinite(bpb):
            raise ProxyDiverged(f"held-out bits per byte is {bpb}")
        return bpb

    @property
    def tokens(self) -> int:
        return self.step * self.settings.batch_size * self.settings.seq_len


def _train_step(
    model: torch.nn.Module,
    batch: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    settings: ProxySettings,
    teacher: Teacher | None = None,
) -> float:
    """One optimizer step on `batch`; returns the cross-entropy (the step is skipped when the
    loss is not finite: the caller stops the run)."""
    device = batch.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(input_ids=batch[:, :-1]).logits
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher.model(input_ids=batch[:, :-1]).logits
    # Our own shift: HF's `labels=` would shift again inside the window and drop a target.
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
    )
    value = loss.item()
    if teacher is not None:
        kl = distillation_loss(logits, teacher_logits, teacher.temperature)
        loss = loss + teacher.weight * kl
        if not math.isfinite(kl.item()):
            return float("nan")
    if not math.isfinite(value):
        return value
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) over next-token distributions at `temperature`, per token, scaled
    by temperature^2 so its gradient keeps the size of the cross-entropy's (Hinton et al.)."""
    return (
        F.kl_div(
            F.log_softmax(logits.float() / temperature, -1).flatten(0, -2),
            F.log_softmax(teacher_logits.float() / temperature, -1).flatten(0, -2),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def train_proxy(
    arch: ArchConfig,
    data: ProxyData,
    settings: ProxySettings,
    *,
    seed: int = 0,
    device: torch.device | None = None,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int, float], bool] | None = None,
) -> ProxyResult:
    """Train `arch` from scratch for `settings.steps` steps; return held-out bits per byte.

    Args:
        checkpoints: step counts after which held-out bits per byte is also measured (recorded in
            `ProxyResult.checkpoints`); the final step is always measured. With `wsd` they are
            measured on the trunk, before the final decay.
        on_checkpoint: called with (steps done, bpb) at each checkpoint before the last; returning
            True stops training there (early stopping), and the result carries that bpb.
    The schedule is `settings.schedule`: `cosine` (warm-up, cosine decay over the run) or `wsd`
    (warm-up, constant rate, then a linear decay over the last `decay_fraction` of the steps).
    """
    started = time.perf_counter()
    run = ProxyRun(arch, data, settings, seed=seed, device=device)
    wsd = settings.schedule == "wsd"
    decay = decay_steps(settings.steps, settings.decay_fraction) if wsd else 0
    measured: list[tuple[int, float, float]] = []
    for mark in sorted(c for c in set(checkpoints) if 0 < c < settings.steps - decay):
        run.advance(mark)
        mid = bits_per_byte(run.model, data, settings)
        measured.append((mark, mid, time.perf_counter() - started))
        if on_checkpoint is not None and math.isfinite(mid) and on_checkpoint(mark, mid):
            return ProxyResult(
                bpb=mid,
                train_loss=run.loss,
                seconds=time.perf_counter() - started,
                tokens=run.tokens,
                curve=run.curve,
                checkpoints=measured,
                stopped_at=mark,
                model=run.model.eval(),
            )
    run.advance(settings.steps - decay)
    final = run.branch(decay) if decay else run
    bpb = final.evaluate()
    if not final.curve or final.curve[-1][0] != final.step - 1:
        final.curve.append((final.step - 1, round(final.loss, 5)))  # the last step, always
    seconds = time.perf_counter() - started
    if checkpoints:
        measured.append((settings.steps, bpb, seconds))
    return ProxyResult(
        bpb=bpb,
        train_loss=final.loss,
        seconds=seconds,
        tokens=settings.tokens,
        curve=final.curve,
        checkpoints=measured,
        model=final.model.eval(),
    )
