"""An optional short fine-tune after pruning, optionally distilled from the uncompressed model.

Off by default (`compression.recovery_steps=0`). Pruning masks stay applied after every step, so
the recovered model keeps its sparsity; quantization runs afterwards on the recovered weights.
With `distill=true` the loss is the KL divergence to the uncompressed trained model's next-token
distribution at `temperature` (plus the usual cross-entropy on the text).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nas.compression.matrices import Matrix
from nas.compression.prune import apply_masks
from nas.quality.training import ProxyData, ProxySettings, distillation_loss


def recover(
    model: torch.nn.Module,
    data: ProxyData,
    settings: ProxySettings,
    *,
    steps: int,
    lr: float,
    matrices: list[Matrix] | None = None,
    masks: list[torch.Tensor] | None = None,
    teacher: torch.nn.Module | None = None,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Fine-tune `model` in place for `steps` steps; returns the loss per step."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    rng = np.random.default_rng(seed + 7919)  # other windows than the proxy run saw first
    span = settings.seq_len + 1
    losses: list[float] = []
    model.train()
    if teacher is not None:
        teacher.eval()
    for _ in range(steps):
        starts = rng.integers(0, len(data.train_ids) - span, size=settings.batch_size)
        batch = np.stack([data.train_ids[s : s + span] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(batch).to(device)
        logits = model(input_ids=batch[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        if teacher is not None:
            with torch.no_grad():
                target = teacher(input_ids=batch[:, :-1]).logits
            loss = loss + distillation_loss(logits, target, temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if matrices is not None and masks is not None:
            apply_masks(matrices, masks)
        losses.append(round(loss.item(), 5))
    model.eval()
    return losses
