"""The decode step as ExecuTorch's own Llama programs run it: a static KV cache inside the program,
written in place, and attention that reads it where it lies.

The program holds one key and one value buffer per layer, [1, context_len, kv_heads, head_dim]
(sequence before heads, the layout ExecuTorch's kernels take), as mutable state that persists
between calls. A step takes the token and its position, writes the token's key and value at that
position (`llama::update_cache`, in place) and attends over positions 0..position
(`llama::custom_sdpa`, causal, grouped-query heads read their shared kv head directly). These are
the custom ops of ExecuTorch's LLM extension, which its Llama export (`--use_kv_cache
--use_sdpa_with_kv_cache`) and runner use; the `executorch` wheel ships them.

Why: traced with the cache as program inputs and outputs (as the ONNX graph has it), a cached
position cost 3.6x what it costs in ONNX Runtime: every step, the grown cache is concatenated,
the keys transposed, and both operands of XNNPACK's batched products packed, several passes over
the cache. A 21M-parameter 4-layer multi-head model at 512 positions decoded in 9.6-10.4 ms that
way against ONNX Runtime's 6.7-6.9 ms; in this form, 4.1-4.4 ms (one thread, AMD EPYC,
2026-12-06; BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from nas.executorch.runtime import load_custom_ops
from nas.quality.models import arch_from_config

ATTENTION = "nas_static_cache_sdpa"


def static_cache_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [batch, heads, q_len, head_dim]
    key: torch.Tensor,  # [batch, kv_heads, q_len, head_dim]: this step's keys only
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # None: custom_sdpa is causal from the start position
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Write this step's keys and values into the layer's cache, then attend over it."""
    keys, values, start = module._nas_static_cache  # type: ignore[attr-defined]
    torch.ops.llama.update_cache(key.transpose(1, 2), keys, start)
    torch.ops.llama.update_cache(value.transpose(1, 2), values, start)
    out = torch.ops.llama.custom_sdpa(
        query.transpose(1, 2), keys, values, start, None, 0.0, True, scaling
    )
    return out, None  # [batch, q_len, heads, head_dim], as transformers' attention returns


AttentionInterface.register(ATTENTION, static_cache_attention)
AttentionMaskInterface.register(ATTENTION, lambda *args, **kwargs: None)


class StaticCacheDecodeStep(torch.nn.Module):
    """One decode step over a cache held in the program: `(input_ids [1,1], position_ids [1,1])`
    to `logits [1,1,vocab]`.

    `position`: None reads the cache position from `position_ids` (the deployable program); an
    int fixes it (a timing program: ExecuTorch's C++ runner feeds every input ones, and the
    cost of a step depends on how much of the cache it reads).
    """

    def __init__(self, model: torch.nn.Module, context_len: int, position: int | None = None):
        super().__init__()
        if position is not None and not 0 <= position < context_len:
            raise ValueError(f"position {position} lies outside a cache of {context_len}")
        self.model = model
        self.context_len = context_len
        self.position = position
        arch = arch_from_config(model.config)
        shape = (1, context_len, arch.n_kv_heads, arch.head_dim)
        for i in range(arch.n_layers):
            self.register_buffer(f"keys_{i}", torch.zeros(shape))
            self.register_buffer(f"values_{i}", torch.zeros(shape))

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        if self.position is None:
            start = position_ids[0, 0].item()
            torch._check_is_size(start)
            torch._check(start < self.context_len)
        else:
            start = self.position
            position_ids = torch.full_like(position_ids, start)
        # handed over here, not before: while torch.export traces, these attributes are the
        # traced buffers, so the in-place writes become the program's buffer mutations
        for i, layer in enumerate(self.model.model.layers):
            cache = (getattr(self, f"keys_{i}"), getattr(self, f"values_{i}"), start)
            layer.self_attn._nas_static_cache = cache
        out = self.model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
        return out.logits


@contextlib.contextmanager
def static_cache(step: StaticCacheDecodeStep) -> Iterator[StaticCacheDecodeStep]:
    """Temporarily run the step's model attention over the step's cache buffers."""
    load_custom_ops()
    config = step.model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield step
    finally:
        config._attn_implementation = previous
        for layer in step.model.model.layers:  # the model keeps no reference to the buffers
            layer.self_attn.__dict__.pop("_nas_static_cache", None)
