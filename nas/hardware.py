"""A target device as the predictors see it, read from `hydra_configs/hardware/<name>.yaml`.

Every number about a device lives in its YAML file next to its source; this module only gives the
numbers types, names and valid ranges. The dataclasses are also the Hydra schema of the
`hardware` config group (`nas.config`), so a profile is type-checked and range-checked once,
when the configuration is composed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from nas.config.rules import at_least, between, one_of, typed
from nas.errors import NasError


@dataclass
class RooflinePrior:
    """Free parameters of the latency model, before calibration on real measurements."""

    bandwidth_efficiency: float = field(default=MISSING, metadata=between(0.0, 1.0))
    compute_efficiency: float = field(default=MISSING, metadata=between(0.0, 1.0))
    per_token_ms: float = field(default=MISSING, metadata=at_least(0.0))
    per_layer_ms: float = field(default=MISSING, metadata=at_least(0.0))
    runtime_overhead_mb: float = field(default=MISSING, metadata=at_least(0.0))
    rel_spread: float = field(default=MISSING, metadata=at_least(0.0))


LONG_CONTEXT_FACTOR = 4


@dataclass
class DeployBudget:
    """What the model may cost on the device, and the conditions latency is quoted at."""

    max_memory_mb: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    context_len: int = field(default=MISSING, metadata=at_least(1))
    prompt_len: int = field(default=MISSING, metadata=at_least(1))
    min_tokens_per_s: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    # Decode is also quoted at a long context, where the KV cache rather than the weights can
    # drive it (GQA and MoE change that balance); null = LONG_CONTEXT_FACTOR x context_len.
    long_context_len: int | None = field(default=None, metadata=at_least(1))

    @property
    def max_decode_ms(self) -> float:
        return 1000.0 / self.min_tokens_per_s

    @property
    def long_context(self) -> int:
        return self.long_context_len or LONG_CONTEXT_FACTOR * self.context_len


@dataclass
class EnergyCosts:
    """Energy per unit of work, for the per-token estimate of `predictors.energy`."""

    pj_per_byte: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    pj_per_flop: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    source: str = ""


# The runtimes a model is exported for and priced in (the `runtime` config group).
RUNTIMES = ("onnxruntime", "executorch")


def runtime_suffix(runtime: str) -> str:
    """What names a runtime's files beside ONNX Runtime's (the default, whose files kept the
    names they had before runtimes were chosen): "" or ".<runtime>"."""
    return "" if runtime == "onnxruntime" else f".{runtime}"


def float_dtype_on(processor: str) -> str:
    """What the engine's exports hold float weights, activations and the KV cache in on
    `processor`: fp16 on GPUs; fp32 on CPUs, whose ONNX Runtime and XNNPACK kernels compute float
    in fp32 (ONNX Runtime's CPU provider lacks fp16 kernels for most operators)."""
    return "fp16" if processor == "gpu" else "fp32"


def int8_activations_on(processor: str) -> bool:
    """The runtime's fast int8/int4 format on `processor` ("cpu" or "gpu") quantizes activations
    (see `HardwareProfile.int8_activations`)."""
    return processor == "cpu"


# How each runtime's graphs hold mixture-of-experts blocks, recorded with every measurement so
# that rows timed on another expert kernel are never fitted together: ONNX Runtime's fused
# MoE / QMoE nodes (nas.onnx.moe_op, nas.onnx.qmoe); ExecuTorch's float experts gathered per
# token into batched matrix products (nas.onnx.moe).
MOE_KERNELS = {"onnxruntime": "ort-moe", "executorch": "gathered-bmm"}
# How each runtime's decode step holds the KV cache, recorded the same way: ONNX Runtime's graph
# takes the past and returns the grown cache (nas.onnx.export); ExecuTorch's program holds it and
# writes it in place (nas.executorch.static_cache). Older ExecuTorch rows had the ONNX form.
DECODE_FORMS = {"onnxruntime": "cache-io", "executorch": "static-cache"}
DECODE_FORM_BEFORE = "cache-io"  # what a row or bundle that does not say was timed in
QMOE_MIN_BLOCK = 16  # QMoE's smallest block


def qmoe_block(d_model: int, ffn_dim: int, group_size: int) -> int | None:
    """The QMoE block for experts of these widths: `group_size` when both the gate/up input
    (d_model) and the down input (ffn) are whole groups of it, else the largest smaller power of
    two that is (finer groups: more scales, never less accuracy), or None when not even 16 is
    (the experts stay float). MatMulNBits pads a ragged last group; QMoE cannot."""
    block = group_size
    while block >= QMOE_MIN_BLOCK:
        if d_model % block == 0 and ffn_dim % block == 0:
            return block
        block //= 2
    return None


@dataclass
class HardwareProfile:
    name: str = MISSING
    description: str = MISSING
    processor: str = field(default=MISSING, metadata=one_of("cpu", "gpu"))
    threads: int = field(default=MISSING, metadata=at_least(1))
    peak_gflops: dict[str, float] = field(default_factory=dict)  # by compute dtype
    memory_gb: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    bandwidth_gbs: float = field(default=MISSING, metadata=at_least(0.0, exclusive=True))
    prior: RooflinePrior = field(default_factory=RooflinePrior)
    deploy: DeployBudget = field(default_factory=DeployBudget)
    energy: EnergyCosts = field(default_factory=EnergyCosts)
    sources: dict[str, str] = field(default_factory=dict)
    sparse_kernels: list[str] = field(default_factory=list)  # sparsity patterns sped up here
    sparse_storage: list[str] = field(default_factory=list)  # sparsity patterns stored compressed
    # The runtime latency and memory are priced in: set from the `runtime` group when the
    # settings load (a device's calibrations are per runtime), not written in a profile's YAML.
    runtime: str = field(default="onnxruntime", metadata=one_of(*RUNTIMES))

    @property
    def int8_activations(self) -> bool:
        """Whether the runtime's fast int8/int4 format quantizes activations too. ONNX Runtime's
        CPU provider runs MatMulNBits fast only with int8 compute (accuracy_level=4: about 2x
        fp32 here, while fp32 compute from int8 weights is 3-5x slower than fp32; BENCHMARKS.md);
        its CUDA provider dequantizes to fp16 and keeps activations float."""
        return int8_activations_on(self.processor)

    def for_runtime(self, runtime: str) -> HardwareProfile:
        """This profile as priced in `runtime` (one of `RUNTIMES`)."""
        return dataclasses.replace(self, runtime=runtime)

    def at_context(self, context_len: int) -> HardwareProfile:
        """This profile with `context_len` tokens in the KV cache while decoding."""
        return dataclasses.replace(
            self, deploy=dataclasses.replace(self.deploy, context_len=context_len)
        )

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> HardwareProfile:
        """A profile from a plain mapping (a hardware YAML's content), checked like the config."""
        name = cfg.get("name", "?") if isinstance(cfg, dict) else "?"
        try:
            return typed(cls, cfg, prefix="hardware")
        except NasError as err:
            raise NasError(f"hardware profile '{name}' is malformed: {err}") from None
