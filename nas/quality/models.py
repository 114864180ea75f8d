"""Turn an `ArchConfig` into a real `transformers` model.

Dense candidates are `LlamaForCausalLM` (RMSNorm, RoPE, SwiGLU, GQA through `num_key_value_heads`);
candidates with experts are `Qwen3MoeForCausalLM`, which also places MoE in every k-th layer
(`decoder_sparse_step`). What the proxy trains is exactly what export writes.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    Qwen3MoeConfig,
)

from nas.arch import ArchConfig

# Token ids every tokenizer built by nas.quality.corpus uses (the special tokens come first).
BOS_EOS_ID = 0
PAD_ID = 1


def hf_config(arch: ArchConfig, *, max_positions: int = 4096) -> PretrainedConfig:
    """The Hugging Face config for `arch`; `max_positions` only sizes RoPE's cache (no weights)."""
    common = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.d_model,
        intermediate_size=arch.ffn_dim,
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_kv_heads,
        head_dim=arch.head_dim,
        tie_word_embeddings=arch.tie_embeddings,
        max_position_embeddings=max_positions,
        bos_token_id=BOS_EOS_ID,
        eos_token_id=BOS_EOS_ID,
        pad_token_id=PAD_ID,
        rms_norm_eps=1e-6,
        attention_bias=False,
    )
    if arch.n_experts == 1:
        return LlamaConfig(**common, mlp_bias=False)
    return Qwen3MoeConfig(
        **common,
        moe_intermediate_size=arch.ffn_dim,
        num_experts=arch.n_experts,
        num_experts_per_tok=arch.experts_per_token,
        decoder_sparse_step=arch.moe_every,
        mlp_only_layers=[],
        norm_topk_prob=True,
    )


def arch_from_config(config: PretrainedConfig) -> ArchConfig:
    """The `ArchConfig` of a Llama or Qwen3-MoE config (the inverse of `hf_config`)."""
    n_experts = int(getattr(config, "num_experts", 1) or 1)
    moe = n_experts > 1
    d_model = config.num_attention_heads * config.head_dim
    return ArchConfig(
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        ffn_dim=config.moe_intermediate_size if moe else config.intermediate_size,
        vocab_size=config.vocab_size,
        n_experts=n_experts,
        experts_per_token=config.num_experts_per_tok if moe else 1,
        moe_every=config.decoder_sparse_step if moe else 1,
        tie_embeddings=bool(config.tie_word_embeddings),
        hidden_size=0 if config.hidden_size == d_model else config.hidden_size,
    )


def build_model(arch: ArchConfig, *, seed: int = 0, max_positions: int = 4096) -> torch.nn.Module:
    """A freshly initialised causal LM for `arch` (fp32, on the CPU, deterministic in `seed`)."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(hf_config(arch, max_positions=max_positions))


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied LM head is counted once, as `ArchConfig.params` does)."""
    return sum(p.numel() for p in model.parameters())
