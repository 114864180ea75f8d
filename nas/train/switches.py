"""What `teacher=` and `lora=` add to the Hugging Face Trainer (QAT is `nas.compression.qat`).

Distillation, BabyLLaMA-style (Timiryasov & Tastet, 2023): loss = LM cross-entropy +
`distill_weight` x KL(teachers || student) at `temperature`, with several teachers' logits
*averaged* before the KL, as BabyLLaMA's trainer does: one soft target per token (an ensemble's
prediction), one KL per step whatever the number of teachers, and a target that does not favour
one teacher's overconfident tokens the way a sum of per-teacher KLs does.

LoRA, QLoRA-style (Dettmers et al., 2023): the compressed model's weights stay frozen at their
compressed values; peft adapters on every attention and MLP projection learn the correction,
and are merged into the weights at the end (the caller quantizes the merged weights again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Trainer

from nas.errors import NasError
from nas.quality.training import distillation_loss

# The projections of Llama / Qwen3 attention and SwiGLU MLPs (dense layers and shared experts).
# Qwen3-MoE's routed experts are 3-D parameter stacks, not Linear modules: they stay frozen.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_teachers(paths: list[Path], device: torch.device) -> list[torch.nn.Module]:
    """Each teacher, offline from its local directory, fp32, frozen, on `device`."""
    teachers = []
    for path in paths:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise NasError(f"teacher {path} does not load ({reason}); pass another") from None
        model.requires_grad_(False)
        teachers.append(model.eval().to(device))
    return teachers


class DistillTrainer(Trainer):
    """The Trainer with the teachers' averaged soft targets added to the LM loss."""

    def __init__(
        self,
        *args: Any,
        teachers: list[torch.nn.Module],
        weight: float,
        temperature: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teachers, self.weight, self.temperature = teachers, weight, temperature

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        outputs = model(**inputs)
        with torch.no_grad():
            ids = inputs["input_ids"]
            target = torch.stack([t(input_ids=ids).logits.float() for t in self.teachers]).mean(0)
        kl = distillation_loss(outputs.logits, target, self.temperature)
        loss = outputs.loss + self.weight * kl
        return (loss, outputs) if return_outputs else loss


def with_lora(model: torch.nn.Module, *, rank: int, alpha: float) -> torch.nn.Module:
    """`model` wrapped with trainable LoRA adapters; everything else frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none"
    )
    return get_peft_model(model, config)


def merged(peft_model: torch.nn.Module) -> torch.nn.Module:
    """The adapters folded into the weights: a plain transformers model again."""
    model = peft_model.merge_and_unload()
    model.requires_grad_(True)  # as a checkpoint trained further expects
    return model


def block_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Where each block matrix is exactly zero now (its sparsity pattern), by parameter name."""
    from nas.compression.matrices import decoder_layers

    masks = {}
    for index, layer in enumerate(decoder_layers(model)):
        for local, param in layer.named_parameters():
            if param.dim() in (2, 3) and bool((param == 0).any()):
                masks[f"{index}.{local}"] = param.detach() != 0
    return masks


@torch.no_grad()
def keep_zeros(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero again what was pruned: a merged LoRA update is dense."""
    from nas.compression.matrices import decoder_layers

    for index, layer in enumerate(decoder_layers(model)):
        for local, param in layer.named_parameters():
            mask = masks.get(f"{index}.{local}")
            if mask is not None:
                param.mul_(mask.to(param.device, param.dtype))
