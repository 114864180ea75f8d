"""The architecture and compression of one candidate, and what they cost.

`ArchConfig` is the single description that every part of the engine shares: the search space
produces it, the predictors price it, `nas.quality.models` turns it into a `transformers` model,
and export writes it out. Its parameter counts are analytic and match `sum(p.numel())` of the
built model exactly (tests/test_arch.py proves it for dense, GQA, MoE, tied and untied).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError

if TYPE_CHECKING:  # nas.shrink builds on ArchConfig
    from nas.shrink import Shrink

SPARSITY_PATTERNS = ("none", "unstructured", "2:4")
QUANT_METHODS = ("rtn", "gptq", "awq")  # round-to-nearest; calibration-based (nas.compression)
PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")


@dataclass(frozen=True)
class ArchConfig:
    """A decoder-only transformer: Llama-style when dense, Qwen3-MoE-style with experts."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int  # SwiGLU hidden size; per expert in MoE layers
    vocab_size: int
    n_experts: int = 1  # 1 = dense
    experts_per_token: int = 1
    moe_every: int = 1  # every k-th layer is MoE (layers k-1, 2k-1, ...), as Qwen3-MoE counts
    tie_embeddings: bool = True
    # Residual width when it differs from n_heads * head_dim (0 = equal): attention heads pruned
    # out of a trained model leave the residual stream as wide as before.
    hidden_size: int = 0

    def __post_init__(self) -> None:
        positive = ("n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
                "(grouped-query attention shares each kv head among a whole group of query heads)"
            )
        if self.n_experts < 1 or not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(
                f"need 1 <= experts_per_token ({self.experts_per_token}) <= n_experts "
                f"({self.n_experts})"
            )
        if self.moe_every < 1:
            raise ValueError(f"moe_every must be >= 1, got {self.moe_every}")
        if self.hidden_size < 0:
            raise ValueError(
                f"hidden_size must be >= 0 (0 = n_heads * head_dim), got {self.hidden_size}"
            )

    # --- derived shape -------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return self.hidden_size or self.n_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1 and self.n_moe_layers > 0

    @property
    def n_moe_layers(self) -> int:
        if self.n_experts == 1:
            return 0
        return sum(1 for i in range(self.n_layers) if (i + 1) % self.moe_every == 0)

    # --- parameter counts ----------------------------------------------------------------------
    @property
    def attention_linear_params(self) -> int:
        """One layer's q, k, v and o projections."""
        q_and_o = 2 * self.d_model * self.n_heads * self.head_dim
        k_and_v = 2 * self.d_model * self.n_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def attention_params(self) -> int:
        """The projections plus Qwen3's per-head q/k RMSNorm, which the MoE class carries."""
        qk_norm = 2 * self.head_dim if self.n_experts > 1 else 0
        return self.attention_linear_params + qk_norm

    @property
    def mlp_params(self) -> int:
        """One SwiGLU MLP (gate, up, down): a dense layer's MLP, or one expert."""
        return 3 * self.d_model * self.ffn_dim

    @property
    def router_params(self) -> int:
        return self.d_model * self.n_experts

    @property
    def embedding_params(self) -> int:
        """Input embedding plus, when untied, the LM head."""
        per_matrix = self.vocab_size * self.d_model
        return per_matrix if self.tie_embeddings else 2 * per_matrix

    @property
    def non_embedding_params(self) -> int:
        n_dense = self.n_layers - self.n_moe_layers
        moe_layer = self.n_experts * self.mlp_params + self.router_params
        layer_norms = 2 * self.d_model
        return (
            self.n_layers * (self.attention_params + layer_norms)
            + n_dense * self.mlp_params
            + self.n_moe_layers * moe_layer
            + self.d_model  # final norm
        )

    @property
    def params(self) -> int:
        return self.embedding_params + self.non_embedding_params

    @property
    def active_params(self) -> int:
        """Parameters a single token touches: only `experts_per_token` experts per MoE layer."""
        idle_experts = self.n_experts - self.experts_per_token
        return self.params - self.n_moe_layers * idle_experts * self.mlp_params

    @property
    def matmul_params(self) -> int:
        """Weights in the blocks' linear layers (all experts): what quantization compresses."""
        n_dense = self.n_layers - self.n_moe_layers
        moe_layer = self.n_experts * self.mlp_params + self.router_params
        return (
            self.n_layers * self.attention_linear_params
            + n_dense * self.mlp_params
            + self.n_moe_layers * moe_layer
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "d_model": self.d_model}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        names = cls.__dataclass_fields__.keys()
        fields = {k: v for k, v in data.items() if k in names}
        # pareto.json names the residual width `d_model` and leaves `hidden_size` out: a shape
        # whose heads were pruned keeps its width (n_heads * head_dim is narrower)
        width = data.get("d_model")
        if "hidden_size" not in data and width and width != data["n_heads"] * data["head_dim"]:
            fields["hidden_size"] = width
        return cls(**fields)


# The methods compression used before it had a choice: a record without a method used these.
METHOD_DEFAULTS = {"quant_method": "rtn", "prune_method": "magnitude"}


PER_CHANNEL = 0  # an 8-bit group_size: one scale per output channel (ExecuTorch's int8)


@dataclass(frozen=True)
class CompressionConfig:
    """How the trained weights are stored on the device."""

    weight_bits: int = 16  # 16 = fp16; 8 and 4 = integer weights with one fp16 scale per group
    # weights per quantization scale; 0 when weight_bits == 16, and for 8-bit weights with one
    # scale per output channel (ExecuTorch's XNNPACK int8, `PER_CHANNEL`)
    group_size: int = 0
    sparsity: float = 0.0  # share of linear-layer weights set to zero
    sparsity_pattern: str = "none"  # none | unstructured | 2:4
    # rtn | gptq | awq: how 8/4-bit weights are chosen; magnitude | wanda | sparsegpt: which
    # weights sparsity zeroes
    quant_method: str = METHOD_DEFAULTS["quant_method"]
    prune_method: str = METHOD_DEFAULTS["prune_method"]

    def __post_init__(self) -> None:
        if self.weight_bits not in (16, 8, 4):
            raise ValueError(f"weight_bits must be 16, 8 or 4, got {self.weight_bits}")
        if self.weight_bits == 4 and self.group_size < 1:
            raise ValueError("4-bit weights need a group_size >= 1")
        if self.weight_bits == 8 and self.group_size < 0:
            raise ValueError("8-bit weights need a group_size >= 1, or 0 for one per channel")
        if self.sparsity_pattern not in SPARSITY_PATTERNS:
            raise ValueError(f"sparsity_pattern must be one of {SPARSITY_PATTERNS}")
        if (self.sparsity_pattern == "none") != (self.sparsity == 0.0):
            raise ValueError("sparsity must be 0 exactly when sparsity_pattern is 'none'")
        if self.sparsity_pattern == "2:4" and self.sparsity != 0.5:
            raise ValueError("2:4 sparsity zeroes exactly half of the weights (sparsity=0.5)")
        if self.quant_method not in QUANT_METHODS:
            raise ValueError(f"quant_method must be one of {QUANT_METHODS}")
        if self.prune_method not in PRUNE_METHODS:
            raise ValueError(f"prune_method must be one of {PRUNE_METHODS}")
        if self.weight_bits == 16 and self.quant_method != "rtn":
            raise ValueError(f"quant_method={self.quant_method} needs 8- or 4-bit weights")
        if self.sparsity_pattern == "none" and self.prune_method != "magnitude":
            raise ValueError(f"prune_method={self.prune_method} needs a sparsity pattern")

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight, counting one fp16 scale per group (a scale per
        output channel is left out: one per row of at least 64 inputs, under 0.5 bit)."""
        if self.weight_bits == 16:
            return 16.0
        if self.group_size == PER_CHANNEL:
            return float(self.weight_bits)
        return self.weight_bits + 16.0 / self.group_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key_dict(self) -> dict[str, Any]:
        """`to_dict` without methods left at their defaults: the candidate keys (trial caches)
        of studies from before the methods existed stay the same."""
        return {k: v for k, v in asdict(self).items() if METHOD_DEFAULTS.get(k, object()) != v}


@dataclass(frozen=True)
class Candidate:
    """What one trial evaluates: an architecture with its compression. `arch` is the shape
    deployed (what the predictors price); with `shrink`, a larger shape is trained and pruned
    to it."""

    arch: ArchConfig
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    shrink: Shrink | None = None

    @property
    def trained_arch(self) -> ArchConfig:
        """The shape the proxy trains (what a trial costs)."""
        return self.arch if self.shrink is None else self.shrink.trained

    def to_dict(self) -> dict[str, Any]:
        mine = {"arch": self.arch.to_dict(), "compression": self.compression.to_dict()}
        return mine if self.shrink is None else {**mine, "shrink": self.shrink.to_dict()}

    def key(self, *extra: Any) -> str:
        """A stable hash of the candidate (and of whatever else decides its result)."""
        mine = {"arch": self.arch.to_dict(), "compression": self.compression.key_dict()}
        if self.shrink is not None:  # absent otherwise: older studies keep their keys
            mine["shrink"] = self.shrink.to_dict()
        payload = json.dumps([mine, *extra], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- one-line labels, as tables, plots and model cards show a candidate ---------------------------
def experts_label(arch: Mapping[str, Any]) -> str:
    """`dense`, or `KofE` experts per token (`/kL`: MoE every k-th layer)."""
    if arch.get("n_experts", 1) == 1:
        return "dense"
    every = "" if arch.get("moe_every", 1) == 1 else f"/{arch['moe_every']}L"
    return f"{arch['experts_per_token']}of{arch['n_experts']}{every}"


def bits_label(compression: Mapping[str, Any]) -> str:
    """`fp16`, `int8g128` (weight bits and group size) or `int8ch` (one scale per channel)."""
    if compression.get("weight_bits", 16) == 16:
        return "fp16"
    group = compression["group_size"]
    return f"int{compression['weight_bits']}" + (f"g{group}" if group else "ch")


def method_label(label: str, compression: Mapping[str, Any], key: str) -> str:
    """`int4g32 gptq`, `2:4 wanda`: the label with its method (quant_method or prune_method),
    where one other than the plain default (rtn, magnitude) acts."""
    default = METHOD_DEFAULTS[key]
    method = compression.get(key, default)
    return label if method == default else f"{label} {method}"


def is_compressed(compression: Mapping[str, Any]) -> bool:
    return (
        compression.get("weight_bits", 16) < 16
        or compression.get("sparsity_pattern", "none") != "none"
    )


def label(arch: Mapping[str, Any], compression: Mapping[str, Any]) -> str:
    """One line: shape and compression, e.g. `2L d64 h4/2 ffn176 moe 2of4 int4 2:4`."""
    experts = "" if arch.get("n_experts", 1) == 1 else f" moe {experts_label(arch)}"
    bits = compression.get("weight_bits", 16)
    quant = "fp16" if bits == 16 else f"int{bits}"
    sparse = compression.get("sparsity_pattern", "none")
    heads = f"h{arch.get('n_heads')}/{arch.get('n_kv_heads')}"
    return (
        f"{arch.get('n_layers')}L d{arch.get('d_model')} {heads} ffn{arch.get('ffn_dim')}"
        f"{experts} {quant}{'' if sparse == 'none' else ' ' + sparse}"
    )


# --- Hugging Face configs (nas.predict prices one; nas.train checks one before training it) ------
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
DENSE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # Llama-style: RoPE, GQA, SwiGLU
MOE_FAMILIES = ("qwen3_moe", "qwen2_moe", "mixtral")
SUPPORTED = (
    f"supported: {', '.join(DENSE_FAMILIES)} (dense, Llama-style) and "
    f"{', '.join(MOE_FAMILIES)} (mixture of experts)"
)


def _int(config: dict[str, Any], key: str, default: int | None = None, minimum: int = 1) -> int:
    """`config[key]` as an integer >= `minimum`; a `NasError` naming the key otherwise."""
    value = config.get(key)
    if value is None:
        if default is None:
            raise NasError(f"config.json lacks {key!r}; {SUPPORTED}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NasError(f"config.json: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def arch_from_hf(config: dict[str, Any]) -> ArchConfig:
    """The `ArchConfig` of a Hugging Face model config; a `NasError` for what it cannot express."""
    family = config.get("model_type")
    if family is not None and family not in DENSE_FAMILIES + MOE_FAMILIES:
        raise NasError(f"config.json describes a {family!r} model; {SUPPORTED}")
    heads = _int(config, "num_attention_heads")
    hidden = _int(config, "hidden_size")
    head_dim = _int(config, "head_dim", hidden // heads or 1)
    experts = next((_int(config, k) for k in EXPERT_KEYS if config.get(k)), 1)
    ffn_key = "moe_intermediate_size" if experts > 1 and config.get("moe_intermediate_size") else ""
    if "head_dim" not in config and hidden % heads:
        raise NasError(
            f"hidden_size={hidden} is not a multiple of num_attention_heads={heads} and "
            "config.json gives no head_dim; add head_dim (the attention width per head)"
        )
    if config.get("shared_expert_intermediate_size") or config.get("mlp_only_layers"):
        raise NasError("MoE models with shared experts or mlp_only_layers are not supported")
    try:
        return ArchConfig(
            n_layers=_int(config, "num_hidden_layers"),
            n_heads=heads,
            n_kv_heads=_int(config, "num_key_value_heads", heads),
            head_dim=head_dim,
            ffn_dim=_int(config, ffn_key or "intermediate_size"),
            vocab_size=_int(config, "vocab_size"),
            n_experts=experts,
            experts_per_token=_int(config, "num_experts_per_tok", 1),
            moe_every=_int(config, "decoder_sparse_step", 1),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            # Qwen3 and Gemma-style models set the attention width apart from the residual
            # width (Qwen3-0.6B: hidden 1024, 16 heads x 128); 0 when they agree.
            hidden_size=0 if heads * head_dim == hidden else hidden,
        )
    except ValueError as err:
        raise NasError(f"config.json describes no model this engine can price: {err}") from None


def read_hf_config(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise NasError(f"no config.json at {path}; pass arch=PATH/config.json")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NasError(f"{path} is not JSON: {err.msg} (line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise NasError(f"{path} is not UTF-8 text ({err.reason}); pass a config.json") from None
    if not isinstance(config, dict):
        raise NasError(f"{path} holds no JSON object; pass a Hugging Face config.json")
    return config


def read_parent(directory: str | Path, label: str, advice: str) -> tuple[ArchConfig, str]:
    """A parent checkpoint's shape and family (`model_type`) from its config.json, refusing what
    no pruned child can follow; `label` names the parent in messages and `advice` ends the
    missing-directory one. Light (no torch): the prune space and `nas.parent` both check here."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise NasError(f"parent directory {directory} not found; {advice}")
    if not (path / "config.json").is_file():
        raise NasError(
            f"{label} holds no config.json, so it is no Hugging Face model directory; "
            "pass the directory save_pretrained wrote"
        )
    config = read_hf_config(path / "config.json")
    try:
        arch = arch_from_hf(config)
    except NasError as err:
        raise NasError(f"{label}: {err}") from None
    if arch.n_experts > 1 and arch.moe_every > 1:
        raise NasError(
            f"{label}: MoE every {arch.moe_every} layers with dense layers between is not "
            "supported (dropping layers would move them); use a parent with MoE in every layer"
        )
    return arch, str(config.get("model_type", ""))
