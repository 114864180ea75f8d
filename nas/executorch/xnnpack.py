"""Equivalent forms of a model's attention and KV cache that XNNPACK runs without copies.

Traced as `transformers` writes them, two steps leave XNNPACK and run in ExecuTorch's portable
kernels, copying the whole KV cache on every decode step (a 10M-parameter fp32 decode at 1024
positions, 2 threads on the 2-core CPU: 8.4 ms, against 3-4 ms in these forms and ONNX Runtime's
2.1-2.3 ms):
- grouped-query attention repeats each kv head for its query heads (`repeat_kv`) and multiplies
  4-D tensors, which `torch.export` lowers to `expand_copy` + `bmm`; `gqa_attention` instead
  folds a kv head's query heads into the rows of one batched matrix product (the same function:
  head `h` reads kv head `h // group`, as `repeat_kv` has it);
- `DynamicCache(ddp_cache_data=...)` copies each past tensor once before appending to it;
  `CacheDecodeStep` hands the past tensors to the cache as they are.
Both compute what torch computes with the model as it is (`nas.executorch.check` compares them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from nas.onnx.export import DecodeStep

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


class CacheDecodeStep(DecodeStep):
    """`nas.onnx.export.DecodeStep` (same inputs and outputs) with the past tensors given to the
    cache as they are, so each is copied once: into the grown cache."""

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            layer.lazy_initialization(past[2 * i], past[2 * i + 1])
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
        out = self.model(
            input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True
        )
        grown = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *grown)
