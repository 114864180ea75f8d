"""The expensive objective: a short training run on real text, scored in held-out bits per byte.

Bits per byte = (summed next-token negative log-likelihood in bits) / (UTF-8 bytes of the scored
tokens); it does not depend on the tokenizer, so models with different vocabularies compare.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from nas.arch import ArchConfig
from nas.config.schema import ProxySettings
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


def _lr_factor(step: int, settings: ProxySettings) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio`."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return settings.min_lr_ratio + (1.0 - settings.min_lr_ratio) * cosine


def _batches(ids: np.ndarray, settings: ProxySettings, seed: int):
    rng = np.random.default_rng(seed)
    span = settings.seq_len + 1
    high = len(ids) - span
    for _ in range(settings.steps):
        starts = rng.integers(0, high, size=settings.batch_size)
        yield torch.from_numpy(np.stack([ids[s : s + span] for s in starts]).astype(np.int64))


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


def _optimizer(
    model: torch.nn.Module, settings: ProxySettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no weight decay on norms) with warm-up and cosine decay."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay}],
        lr=settings.lr,
        betas=(0.9, 0.95),
        weight_decay=0.0,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    return optimizer, schedule


def _train_step(
    model: torch.nn.Module,
    batch: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    settings: ProxySettings,
) -> float:
    """One optimizer step on `batch`; returns the loss (the step is skipped when it is not
    finite: the caller stops the run)."""
    device = batch.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(input_ids=batch[:, :-1]).logits
    # Our own shift: HF's `labels=` would shift again inside the window and drop a target.
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1)
    )
    value = loss.item()
    if not math.isfinite(value):
        return value
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


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
            `ProxyResult.checkpoints`); the final step is always measured.
        on_checkpoint: called with (steps done, bpb) at each checkpoint before the last; returning
            True stops training there (early stopping), and the result carries that bpb.
    """
    device = device or torch.device("cpu")
    started = time.perf_counter()
    model = build_model(arch, seed=seed, max_positions=settings.seq_len).to(device)
    model.train()
    optimizer, schedule = _optimizer(model, settings)
    log_every = max(1, settings.steps // 20)
    curve: list[tuple[int, float]] = []
    loss_value = float("nan")
    marks = {c for c in checkpoints if 0 < c < settings.steps}
    measured: list[tuple[int, float, float]] = []
    for step, batch in enumerate(_batches(data.train_ids, settings, seed)):
        loss_value = _train_step(model, batch.to(device, non_blocking=True), optimizer, settings)
        if not math.isfinite(loss_value):
            raise ProxyDiverged(f"training loss became {loss_value} at step {step}")
        schedule.step()
        if step % log_every == 0 or step == settings.steps - 1:
            curve.append((step, round(loss_value, 5)))
        if step + 1 in marks:
            mid = bits_per_byte(model, data, settings)
            measured.append((step + 1, mid, time.perf_counter() - started))
            if on_checkpoint is not None and math.isfinite(mid) and on_checkpoint(step + 1, mid):
                return ProxyResult(
                    bpb=mid,
                    train_loss=loss_value,
                    seconds=time.perf_counter() - started,
                    tokens=(step + 1) * settings.batch_size * settings.seq_len,
                    curve=curve,
                    checkpoints=measured,
                    stopped_at=step + 1,
                    model=model.eval(),
                )
    bpb = bits_per_byte(model, data, settings)
    if not math.isfinite(bpb):
        raise ProxyDiverged(f"held-out bits per byte is {bpb}")
    seconds = time.perf_counter() - started
    if checkpoints:
        measured.append((settings.steps, bpb, seconds))
    return ProxyResult(
        bpb=bpb,
        train_loss=loss_value,
        seconds=seconds,
        tokens=settings.tokens,
        curve=curve,
        checkpoints=measured,
        model=model.eval(),
    )
