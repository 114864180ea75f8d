"""Calibration activations: what each weight matrix of a decoder layer sees on real text.

GPTQ, AWQ, Wanda and SparseGPT all need, for every matrix W [out, in], statistics of its inputs X
on calibration tokens: the Gram matrix H = sum x x^T (GPTQ's and SparseGPT's Hessian, up to a
factor 2; its diagonal gives Wanda's ||X_j||^2), and the mean |x_j| per input channel (AWQ). With
H the output reconstruction error of any replacement W' is exact and cheap:
||W X - W' X||^2 = tr((W - W') H (W - W')^T), which is what the methods minimise and what the tests
check.

Layers are processed in order (`sequential`): layer i's statistics are taken with layers < i
already compressed, as the GPTQ and SparseGPT references do, so each layer corrects for the error
before it. The windows come from the corpus' training split (`calibration_windows`), never from
held-out text. Experts of a Qwen3-MoE layer are 3-D parameters; their inputs (the tokens routed
to each expert, and its SwiGLU activations) are recomputed from the expert block's own inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from nas.compression.matrices import Matrix, block_matrices, decoder_layers


@dataclass
class Stats:
    """Input statistics of one matrix (float64 sums over `tokens` calibration tokens)."""

    gram: torch.Tensor  # [in, in]: sum of x x^T
    abs_sum: torch.Tensor  # [in]: sum of |x|
    tokens: int = 0

    @classmethod
    def empty(cls, width: int) -> Stats:
        zeros = torch.zeros(width, dtype=torch.float64)
        return cls(torch.zeros(width, width, dtype=torch.float64), zeros)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float().cpu()
        self.gram += (x.T @ x).double()  # one chunk in float32 (fast), summed in float64
        self.abs_sum += x.abs().sum(0).double()
        self.tokens += x.shape[0]

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(1, self.tokens)

    @property
    def sq_norms(self) -> torch.Tensor:
        """||X_j||^2 per input channel (Wanda's activation norm, squared)."""
        return torch.diagonal(self.gram).clone()


def row_errors(weight: torch.Tensor, new: torch.Tensor, stats: Stats) -> torch.Tensor:
    """||W_r X - W'_r X||^2 of each output row r over the calibration tokens (from H)."""
    delta = (weight.double() - new.double()).cpu()
    return ((delta @ stats.gram) * delta).sum(1)


def reconstruction_error(weight: torch.Tensor, new: torch.Tensor, stats: Stats) -> float:
    """||W X - W' X||_F^2 over the calibration tokens, from the Gram matrix."""
    return float(row_errors(weight, new, stats).sum())


def calibration_windows(ids: np.ndarray, *, seq_len: int, count: int, seed: int) -> torch.Tensor:
    """`count` windows of `seq_len` tokens from `ids` (a training split), at random starts that
    depend only on `seed`."""
    if len(ids) <= seq_len:
        raise ValueError(f"{len(ids)} calibration tokens are fewer than one window of {seq_len}")
    rng = np.random.default_rng([seed, 104729])
    starts = rng.integers(0, len(ids) - seq_len, size=count)
    return torch.from_numpy(np.stack([ids[s : s + seq_len] for s in starts]).astype(np.int64))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Column loops and small factorisations run many small operations: extra threads only add
    overhead (on a loaded 2-core machine a 300 x 300 Cholesky inverse took 40x longer on 2)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Matrices that read exactly the input of another (one statistics object, counted once).
SAME_INPUT = {
    "self_attn.k_proj": "self_attn.q_proj",
    "self_attn.v_proj": "self_attn.q_proj",
    "mlp.up_proj": "mlp.gate_proj",
}


class _Stop(Exception):
    """Raised after the layer of interest: the rest of the forward pass is not needed."""


def _expert_hook(layer_index: int, experts: torch.nn.Module, found: dict[str, Stats]):
    """Per-expert inputs of `mlp.experts`: routed tokens (gate_up) and SwiGLU outputs (down)."""
    prefix = f"model.layers.{layer_index}.mlp.experts"

    def hook(_module, args):
        hidden, top_k_index = args[0], args[1]
        for e in range(experts.gate_up_proj.shape[0]):
            tokens = (top_k_index == e).any(-1).nonzero().flatten()
            x = hidden[tokens]
            gate, up = torch.nn.functional.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
            h = experts.act_fn(gate) * up
            pairs = ((f"{prefix}.gate_up_proj[{e}]", x), (f"{prefix}.down_proj[{e}]", h))
            for name, value in pairs:
                found.setdefault(name, Stats.empty(value.shape[-1])).add(value)

    return hook


def _module_hook(label: str, found: dict[str, Stats]):
    def hook(_module, args):
        x = args[0]
        found.setdefault(label, Stats.empty(x.shape[-1])).add(x)

    return hook


@torch.no_grad()
def layer_stats(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    layer_index: int,
    *,
    batch: int = 8,
    inputs: list[tuple[tuple, dict]] | None = None,
) -> dict[str, Stats]:
    """Input statistics of every matrix of decoder layer `layer_index`, keyed by `Matrix.label`;
    with `inputs`, the layer's own inputs (args, kwargs) of each batch are appended to it."""
    layer = decoder_layers(model)[layer_index]
    found: dict[str, Stats] = {}
    hooks = []
    if inputs is not None:

        def keep(_module, args, kwargs):
            inputs.append((args, kwargs))

        hooks.append(layer.register_forward_pre_hook(keep, with_kwargs=True))
    for local, module in layer.named_modules():
        name = f"model.layers.{layer_index}.{local}"
        if local.endswith(tuple(SAME_INPUT)):
            continue  # reads what another matrix reads: shares its statistics (below)
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_pre_hook(_module_hook(f"{name}.weight", found)))
        elif local.endswith("mlp.gate") and hasattr(module, "weight"):  # the MoE router
            hooks.append(module.register_forward_pre_hook(_module_hook(f"{name}.weight", found)))
        elif local.endswith("mlp.experts") and hasattr(module, "gate_up_proj"):
            hooks.append(module.register_forward_pre_hook(_expert_hook(layer_index, module, found)))

    def stop(_module, _args, _output):
        raise _Stop

    hooks.append(layer.register_forward_hook(stop))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for chunk in calibration.split(batch):
            try:
                model(input_ids=chunk.to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for label in list(found):
        for same, source in SAME_INPUT.items():
            if label.endswith(f"{source}.weight"):
                found[label.removesuffix(f"{source}.weight") + f"{same}.weight"] = found[label]
    return found


def sequential(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    apply: Callable[[int, list[Matrix], dict[str, Stats], list], None],
    *,
    observe: torch.nn.Module | None = None,
    keep_inputs: bool = False,
) -> None:
    """For each decoder layer in order: its statistics, then `apply(layer_index, matrices of the
    layer, stats, layer inputs)`, which changes the layer in place; the layer inputs (args,
    kwargs per batch) are kept only with `keep_inputs`. Statistics and inputs are read from
    `observe` (an unchanged copy: AWQ's float activations) or, by default, from `model` itself,
    whose earlier layers are already changed (GPTQ's and SparseGPT's sequential mode)."""
    source = model if observe is None else observe
    matrices = block_matrices(model)
    for index in range(len(decoder_layers(model))):
        prefix = f"model.layers.{index}."
        mine = [m for m in matrices if m.name.startswith(prefix)]
        inputs: list = []
        stats = layer_stats(source, calibration, index, inputs=inputs if keep_inputs else None)
        with one_thread():
            apply(index, mine, stats, inputs)
