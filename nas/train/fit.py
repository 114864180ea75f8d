"""The Hugging Face Trainer loop behind `nas.train`, and the token windows it trains on."""

from __future__ import annotations

import math
import tempfile

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainingArguments

from nas.errors import NasError
from nas.train.args import TrainSettings


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


def fit(
    model: torch.nn.Module,
    dataset: Windows,
    settings: TrainSettings,
    device: torch.device,
    teachers: list[torch.nn.Module] | None = None,
) -> list[tuple[int, float]]:
    """AdamW, warm-up then cosine, gradient clipping, progress bar; with `teachers`, the loss
    adds the KL to their averaged logits (`switches.DistillTrainer`). Returns (step, loss)."""
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
        if teachers:
            from nas.train.switches import DistillTrainer

            trainer: Trainer = DistillTrainer(
                model=model,
                args=args,
                train_dataset=dataset,
                teachers=teachers,
                weight=settings.distill_weight,
                temperature=settings.temperature,
            )
        else:
            trainer = Trainer(model=model, args=args, train_dataset=dataset)
        if settings.quiet:  # without a progress bar the Trainer prints every log line instead
            trainer.remove_callback(PrinterCallback)
        trainer.train()
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    if not losses or not all(math.isfinite(v) for _, v in losses):
        raise NasError(f"training diverged (losses {losses[-3:]}); lower lr=, e.g. lr=1e-3")
    return losses
