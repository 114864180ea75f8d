"""The compression recipe: what was done to a trained model, in the order it was done.

Written into every trial (user attr `recipe`) and shipped by export next to the model, so that the
deployed weights can be reproduced: which matrices, which sparsity pattern and method, which bits,
group size and quantizer, and whether a recovery fine-tune ran. Format version `FORMAT`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "slm-nas-compression/1"
# Matrices inside the decoder blocks are compressed; these stay float (as predictors.footprint
# assumes, and as the ONNX quantizer leaves the LM head).
KEPT_FLOAT = ("model.embed_tokens", "lm_head", "*norm")


@dataclass(frozen=True)
class QuantStep:
    bits: int
    group_size: int
    # rtn: round-to-nearest, one scale per group; gptq: columns rounded in turn with
    # inverse-Hessian error feedback; awq: activation-aware input-channel scales folded into the
    # preceding RMSNorm / v_proj / up_proj, then round-to-nearest. gptq and awq: on ONNX
    # Runtime's grid only.
    method: str = "rtn"
    symmetric: bool = True
    group_axis: str = "input"  # groups run along each output row's input weights
    backend: str = "onnxruntime MatMulNBits block quantizer"
    # "float" (fp32 compute) or "int8": inputs quantized per block of group_size at run time
    # (ONNX Runtime MatMulNBits accuracy_level=4)
    activations: str = "float"
    calibration: dict[str, Any] | None = None  # the windows gptq / awq measured inputs on
    # Whose numerics: "matmulnbits" (ONNX Runtime) or "xnnpack" (ExecuTorch through torchao:
    # int8 with one scale per output channel, group_size 0; int4 per group with bf16 scales;
    # activations int8 per token, asymmetric; mixture-of-experts experts and the router float).
    format: str = "matmulnbits"
    # xnnpack: linear layers left float because their input width holds no whole group
    float_layers: list[str] | None = None
    act_order: bool | None = None  # gptq: columns in order of decreasing Hessian diagonal
    damp: float | None = None  # gptq: share of the mean Hessian diagonal added to it
    rtn_rows: str | None = None  # gptq: "k of n" rows kept round-to-nearest (it fitted better)
    alpha: dict[str, float] | None = None  # awq: the exponent chosen per scale group


@dataclass(frozen=True)
class SparsityStep:
    pattern: str  # unstructured | 2:4
    sparsity: float
    # magnitude: smallest |w| per matrix; wanda: smallest |w| * ||x|| per output row;
    # sparsegpt: inverse-Hessian saliency, remaining weights re-fitted to the layer's outputs
    method: str = "magnitude"
    scope: str = "per-matrix"
    backend: str = ""
    measured: float | None = None  # share of exact zeros after pruning
    calibration: dict[str, Any] | None = None  # the windows wanda / sparsegpt measured inputs on
    # wanda / sparsegpt: "k of n" matrices that kept magnitude pruning (it fitted them better)
    magnitude_matrices: str | None = None


@dataclass(frozen=True)
class StructuredStep:
    heads: float = 0.0  # share of query heads removed
    ffn: float = 0.0  # share of FFN channels removed (every dense MLP and every expert)
    experts: float = 0.0  # share of experts removed from every MoE layer
    layers: float = 0.0  # share of decoder layers removed (lowest block influence first)
    method: str = (
        "l1-norm (heads, channels); routing weight on calibration tokens (experts); "
        "block influence on calibration tokens (layers)"
    )
    backend: str = "nni==3.0 L1NormPruner + slicing into a smaller transformers model"
    arch_before: dict[str, Any] | None = None
    removed: dict[str, int] | None = None


@dataclass(frozen=True)
class RecoveryStep:
    steps: int
    lr: float
    distill: bool  # teacher = the uncompressed trained model
    temperature: float


@dataclass(frozen=True)
class Recipe:
    modules: tuple[str, ...]  # matrix names inside each decoder layer, e.g. self_attn.q_proj
    structured: StructuredStep | None = None
    sparsity: SparsityStep | None = None
    recovery: RecoveryStep | None = None
    quantization: QuantStep | None = None
    kept_float: tuple[str, ...] = KEPT_FLOAT
    order: tuple[str, ...] = field(
        default=("structured", "sparsity", "recovery", "quantization"), init=False
    )

    @property
    def is_identity(self) -> bool:
        return not (self.structured or self.sparsity or self.quantization)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}


def module_names(matrix_names: list[str]) -> tuple[str, ...]:
    """`model.layers.3.self_attn.q_proj.weight` -> `self_attn.q_proj`, deduplicated, in order."""
    out: dict[str, None] = {}
    for name in matrix_names:
        local = name.split(".", 3)[3] if name.startswith("model.layers.") else name
        out[local.removesuffix(".weight")] = None
    return tuple(out)
