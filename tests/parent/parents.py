"""Tiny pretrained parents, built in-process: a dense Llama, a Qwen3 whose attention width
differs from its residual width, and a Qwen3-MoE, each trained on the project's corpus long
enough to have learned something and saved with `save_pretrained` (safetensors) beside the
corpus tokenizer's tokenizer.json, as a user's parent directory would be."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config, Qwen3MoeConfig

from nas.compression.calibration import calibration_windows
from nas.config.compose import load_settings
from nas.quality.data import prepare_data
from nas.quality.training import ProxyData, ProxySettings, batch_at

STEPS = 80  # enough to learn far more than the unigram statistics of the corpus
LR = 3e-3


@dataclass(frozen=True)
class TinyParent:
    directory: Path
    data: ProxyData  # the corpus the parent was trained on (held-out split for scoring)
    settings: ProxySettings  # seq_len, batch size and eval windows of the smoke budget
    calibration: torch.Tensor  # calibration windows from the training split


def _configs(vocab: int) -> dict[str, object]:
    common = dict(
        vocab_size=vocab, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
        pad_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    return {
        "llama": LlamaConfig(hidden_size=64, intermediate_size=96, **common),
        # Attention 4 x 16 = 64 wide on a 48-wide residual stream, as Qwen3-0.6B (1024 vs 2048)
        "qwen3": Qwen3Config(hidden_size=48, intermediate_size=96, **common),
        "qwen3_moe": Qwen3MoeConfig(
            hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_experts=4,
            num_experts_per_tok=2, norm_topk_prob=True, **common,
        ),
    }  # fmt: skip


def _train(model: torch.nn.Module, data: ProxyData, settings: ProxySettings, steps: int) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = batch_at(data.train_ids, settings, seed=0, step=step)
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        # labels shift inside the model: the window's own tokens are the targets
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()


def build_parents(root: Path, cache: Path, *, steps: int = STEPS) -> dict[str, TinyParent]:
    """The three parents under `root`, trained `steps` steps (0: as initialised, for tests that
    need a checkpoint's files and shapes but no learned weights)."""
    cfg = load_settings(["budget=smoke", "hardware=pixel8", f"cache_dir={cache}"])
    data, tokenizer, info = prepare_data(cfg.proxy, cache)
    settings = replace(cfg.proxy.training, batch_size=8)
    calibration = calibration_windows(data.train_ids, seq_len=settings.seq_len, count=16, seed=0)
    out = {}
    for name, config in _configs(info["vocab_size"]).items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        _train(model, data, settings, steps)
        directory = root / name
        model.save_pretrained(directory)
        tokenizer.save(str(directory / "tokenizer.json"))
        out[name] = TinyParent(directory, data, settings, calibration)
    return out
