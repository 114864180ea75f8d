"""Attention in a form XNNPACK runs whole: the prefill program's.

Traced as `transformers` writes it, grouped-query attention repeats each kv head for its query
heads (`repeat_kv`) and multiplies 4-D tensors, which `torch.export` lowers to `expand_copy` (a
portable kernel, outside XNNPACK) + `bmm`. `gqa_attention` instead folds a kv head's query heads
into the rows of one batched matrix product: the same function (head `h` reads kv head
`h // group`, as `repeat_kv` has it), which `nas.executorch.check` compares with torch.

Decode does not use it: there the cache lives in the program (`nas.executorch.static_cache`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "nas_xnnpack_gqa"


def gqa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [batch, heads, q_len, head_dim]
    key: torch.Tensor,  # [batch, kv_heads, kv_len, head_dim]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # additive: 0 or the dtype's minimum
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Softmax attention for grouped-query heads as 3-D batched matrix products."""
    batch, heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    rows = query.reshape(batch * kv_heads, group * q_len, head_dim)  # rows: (group, position)
    keys = key.reshape(batch * kv_heads, kv_len, head_dim)
    scores = torch.bmm(rows, keys.transpose(1, 2)) * scale
    if attention_mask is not None:
        mask = attention_mask[:, :, :, :kv_len]  # [batch, 1, q_len, kv_len]
        grouped = scores.view(batch, kv_heads, group, q_len, kv_len) + mask[:, :, None]
        scores = grouped.view(batch * kv_heads, group * q_len, kv_len)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.bmm(probs, value.reshape(batch * kv_heads, kv_len, head_dim))
    return out.view(batch, heads, q_len, head_dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, gqa_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)  # an additive float mask: XNNPACK's add


@contextlib.contextmanager
def xnnpack_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily run `model`'s attention (and build its masks) as `gqa_attention`."""
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield model
    finally:
        config._attn_implementation = previous
