"""The variants `python -m nas.bench compression` measures, and how one is applied to a copy of a
trained model (every variant starts from the same trained weights)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from nas.arch import ArchConfig, Candidate, CompressionConfig
from nas.compression import CompressionSettings, StructuredSpec, compress
from nas.compression.qat import attach, convert
from nas.compression.recovery import recover
from nas.config.schema import ProxySettings
from nas.quality.training import ProxyData

INT8 = {"weight_bits": 8, "group_size": 128}
INT4_128 = {"weight_bits": 4, "group_size": 128}
INT4_32 = {"weight_bits": 4, "group_size": 32}
FORMATS = {"int8 g128": INT8, "int4 g128": INT4_128, "int4 g32": INT4_32}
UNSTRUCTURED = {"sparsity": 0.5, "sparsity_pattern": "unstructured"}
TWO_FOUR = {"sparsity": 0.5, "sparsity_pattern": "2:4"}


@dataclass(frozen=True)
class Variant:
    """One measured row: a compression, optionally with structured pruning, a fine-tune
    (recovery after pruning, distillation, QAT, or a plain float fine-tune as QAT's control)."""

    name: str
    table: str  # quantization | sparsity | structured | qat | combined
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    structured: StructuredSpec | None = None
    recovery: int = 0  # fine-tune steps after pruning (masks kept), before quantization
    distill: bool = False  # the fine-tune learns from the uncompressed model (KL + LM loss)
    qat: int = 0  # fake-quantized fine-tune steps, then convert (instead of PTQ)
    float_tune: int = 0  # plain fine-tune steps before PTQ (QAT's control: the same extra steps)

    @property
    def tunes(self) -> bool:
        return bool(self.recovery or self.qat or self.float_tune)

    def graph(self, arch: ArchConfig) -> str:
        """Which decode graph times this variant: its final shape and weight format (values
        do not change an ONNX graph's ops, sizes or speed on a CPU without sparse kernels)."""
        comp = self.compression
        fmt = "fp32" if comp.weight_bits == 16 else f"int{comp.weight_bits} g{comp.group_size}"
        return f"{fmt} | {_shape(self.structured)}"


def _shape(spec: StructuredSpec | None) -> str:
    if spec is None or not spec.active:
        return "full"
    parts = [f"{k} {v:.0%}" for k, v in vars(spec).items() if v]
    return ", ".join(parts)


def _c(*parts: dict, quant: str = "rtn", prune: str = "magnitude") -> CompressionConfig:
    merged: dict = {}
    for part in parts:
        merged.update(part)
    if merged.get("weight_bits", 16) == 16:
        quant = "rtn"
    if merged.get("sparsity_pattern", "none") == "none":
        prune = "magnitude"
    return CompressionConfig(**merged, quant_method=quant, prune_method=prune)


def variants(arch: ArchConfig, *, tune_steps: int) -> list[Variant]:
    """Every row of the bench for `arch` (fine-tunes of `tune_steps` steps)."""
    rows = [Variant("fp32", "quantization")]
    for fmt, spec in FORMATS.items():
        rows += [
            Variant(f"{m} {fmt}", "quantization", _c(spec, quant=m)) for m in ("rtn", "gptq", "awq")
        ]
    for label, spec in (("50%", UNSTRUCTURED), ("2:4", TWO_FOUR)):
        methods = ("magnitude", "wanda", "sparsegpt")
        rows += [Variant(f"{m} {label}", "sparsity", _c(spec, prune=m)) for m in methods]
    for kind in ("heads", "ffn", "layers"):
        for share in (0.25, 0.5):
            spec = StructuredSpec(**{kind: share})
            name = f"{share:.0%} {kind}"
            rows.append(Variant(name, "structured", structured=spec))
            rows.append(
                Variant(f"{name} + fine-tune", "structured", structured=spec, recovery=tune_steps)
            )
            rows.append(
                Variant(
                    f"{name} + distill",
                    "structured",
                    structured=spec,
                    recovery=tune_steps,
                    distill=True,
                )
            )
    if arch.is_moe:
        spec = StructuredSpec(experts=0.25)
        rows += [
            Variant("25% experts", "structured", structured=spec),
            Variant("25% experts + fine-tune", "structured", structured=spec, recovery=tune_steps),
        ]
    rows += [
        Variant("PTQ rtn int4 g32", "qat", _c(INT4_32)),
        Variant("PTQ gptq int4 g32", "qat", _c(INT4_32, quant="gptq")),
        Variant("fine-tune, then PTQ rtn int4 g32", "qat", _c(INT4_32), float_tune=tune_steps),
        Variant("QAT int4 g32", "qat", _c(INT4_32), qat=tune_steps),
    ]
    return rows + combined(tune_steps)


def combined(tune_steps: int) -> list[Variant]:
    """The 2^3 design of the survey's question: prune (P: SparseGPT 50%), quantize (Q: GPTQ int4
    g32), distil (D: a distillation fine-tune from the uncompressed model, after P, before Q)."""
    rows = []
    for p in (False, True):
        for q in (False, True):
            for d in (False, True):
                name = "".join(x for x, on in (("P", p), ("Q", q), ("D", d)) if on) or "none"
                parts = [UNSTRUCTURED] if p else []
                parts += [INT4_32] if q else []
                comp = _c(*parts, quant="gptq", prune="sparsegpt")
                rows.append(
                    Variant(
                        f"combined {name}",
                        "combined",
                        comp,
                        recovery=tune_steps if d else 0,
                        distill=d,
                    )
                )
    return rows


def apply_variant(
    variant: Variant,
    trained: torch.nn.Module,
    arch: ArchConfig,
    data: ProxyData,
    proxy: ProxySettings,
    *,
    calibration: torch.Tensor,
    seed: int,
    lr: float,
    int8_activations: bool = True,
):
    """A compressed copy of `trained` as `variant` says: (model, arch, recipe dict, tune losses).
    int8/int4 are scored with int8 activations by default: local_cpu's runtime format."""
    model = copy.deepcopy(trained)
    comp = variant.compression
    losses: list[float] = []
    if variant.float_tune:
        losses = recover(model, data, proxy, steps=variant.float_tune, lr=lr, seed=seed)
    if variant.qat:
        attached = attach(model, bits=comp.weight_bits, group_size=comp.group_size)
        losses = recover(model, data, proxy, steps=variant.qat, lr=lr, seed=seed)
        convert(attached)  # on the grid already: the round-to-nearest below changes nothing
    pruned = comp.sparsity_pattern != "none" or (variant.structured and variant.structured.active)
    if variant.recovery and not pruned:  # nothing to recover: the fine-tune (or distillation) alone
        teacher = copy.deepcopy(trained).eval() if variant.distill else None
        losses = recover(
            model, data, proxy, steps=variant.recovery, lr=lr, teacher=teacher, seed=seed
        )
    settings = CompressionSettings(
        recovery_steps=variant.recovery if pruned else 0,
        recovery_lr=lr,
        distill=variant.distill,
        int8_activations=int8_activations,
    )
    done = compress(
        model,
        Candidate(arch, comp),
        structured=variant.structured,
        settings=settings,
        data=data,
        proxy=proxy,
        calibration=calibration,
        seed=seed,
    )
    return done.model, done.arch, done.recipe.to_dict(), losses or done.recovery_losses
