"""The model card (`README.md`) of an exported trial: what was found, what it costs, and where from.

Everything in the card comes from the trial's stored attributes and the study's identity; nothing
is re-measured here. Latency and memory are predictions, and the card says whether the predictor
was calibrated on the target device.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

PACKAGES = ("slm-nas", "torch", "transformers", "tokenizers", "optuna", "onnxruntime")


def package_versions() -> dict[str, str]:
    """Versions of the packages that built and scored the model (and of Python)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class CardFacts:
    """What the card reports about one exported trial."""

    study: str
    trial: int
    model_class: str
    arch: dict[str, Any]
    compression: dict[str, Any]
    metrics: dict[str, Any]
    identity: dict[str, Any]
    device_limits: dict[str, Any]
    predictor: dict[str, Any]
    compression_note: str
    files: list[str]
    recipe: dict[str, Any] | None = None  # the trial's recipe (nas.compression.Recipe.to_dict)
    target: dict[str, Any] | None = None  # the study's training target (nas.records.target)
    # A prune study's child: its parent (nas.records.parent), the distillation run that trained
    # the exported weights, and what of the parent each axis kept.
    parent: dict[str, Any] | None = None
    distillation: dict[str, Any] | None = None
    pruned: dict[str, str] | None = None
    trained_arch: dict[str, Any] | None = None  # a shrink trial: the shape trained, then pruned
    versions: dict[str, str] = field(default_factory=package_versions)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric(metrics: dict[str, Any], key: str, unit: str = "", digits: int = 3) -> str:
    if key not in metrics:
        return "n/a"
    text = _fmt(metrics[key], digits) + (f" {unit}" if unit else "")
    std = metrics.get(f"{key}_std")
    return f"{text} (± {_fmt(std, digits)})" if isinstance(std, (int, float)) and std else text


def _count(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return f"{value:,}" if isinstance(value, int) else "n/a"


def _calibration(facts: CardFacts) -> str:
    calibrated = facts.predictor.get("calibrated", facts.metrics.get("calibrated"))
    source = facts.predictor.get("provenance", "")
    if calibrated:
        word = "calibrated on measurements from the target device"
    elif calibrated is None:
        word = "calibration status unknown (the study did not record it)"
    else:
        word = "**uncalibrated** (roofline prior from published specifications, not measured)"
    return f"{word}; {source}" if source else word


def render(facts: CardFacts) -> str:
    """The card as Markdown, with the Hugging Face metadata block on top."""
    hardware = facts.identity.get("hardware", "unknown")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: [slm-nas, {hardware}, {facts.model_class}]",
        "---",
        "",
        f"# {facts.study} — trial {facts.trial}",
        "",
        *_intro(facts, hardware),
        "",
        *_objectives(facts),
        *_parent(facts),
        *_architecture(facts),
        "## Compression recipe (`compression.json`)",
        "",
        f"Weights: {_weights(facts.compression, facts.recipe)}; "
        f"sparsity: {_sparsity(facts.compression)}.",
        _steps(facts.recipe),
        facts.compression_note,
        "",
        *_provenance(facts),
    ]
    return "\n".join(lines)


def _intro(facts: CardFacts, hardware: str) -> list[str]:
    if facts.parent is None and facts.trained_arch is not None:
        t = facts.trained_arch
        return [
            f'A `{facts.model_class}` found by slm-nas for **{hardware}** as "train this shape, '
            f'then prune it": `config.json` is the shape to train ({t["n_layers"]} layers × '
            f"{t['d_model']}, {t['n_heads']}/{t['n_kv_heads']} heads, FFN {t['ffn_dim']}, "
            f"{t['n_experts']} expert(s)); `python -m nas.train <this folder> data=...` trains it "
            "and applies `compression.json`, whose structured step prunes it to the architecture "
            "below (the shape the latency and memory figures are for; `model.onnx` has it). "
            "The weights here are untrained."
        ]
    if facts.parent is None:
        return [
            f"A `{facts.model_class}` architecture found by slm-nas for **{hardware}**. The "
            "weights here are untrained: train it with `python -m nas.train <this folder> "
            "data=...`."
        ]
    return [
        f"A `{facts.model_class}` pruned by slm-nas out of the parent `{facts.parent['directory']}`"
        f" for **{hardware}**, with the weights the search trained (`model.safetensors`). Continue"
        f" distilling it: `python -m nas.train <this folder> teacher={facts.parent['directory']}"
        " steps=...`."
    ]


def _parent(facts: CardFacts) -> list[str]:
    """Which parent, what was pruned, and the distillation run behind the weights."""
    if facts.parent is None:
        return []
    parent, run = facts.parent, facts.distillation or {}
    kept = [f"| {axis} | {value} |" for axis, value in (facts.pruned or {}).items()]
    return [
        "## Parent and pruning",
        "",
        f"Parent: `{parent['directory']}` ({parent.get('family', '?')}, "
        f"{parent.get('params', 0):,} parameters, fingerprint {parent.get('fingerprint')}); its "
        f"own held-out bits per byte on the study's text: {_fmt(parent.get('bpb', 'n/a'))}.",
        "Kept by activation importance (Minitron-style: block influence, head, channel and "
        "expert activations on calibration text of the corpus):",
        "",
        "| axis | kept of the parent's |",
        "|---|---|",
        *kept,
        "",
        f"Distillation: {run.get('steps', '?')} steps ({run.get('tokens', 0):,} tokens, rung "
        f"{run.get('rung', '?')}, {run.get('schedule', '?')} schedule, peak lr "
        f"{run.get('lr', '?')}), seed {run.get('seed', '?')}, loss = cross-entropy + "
        f"{run.get('weight', '?')} × KL(parent ‖ child) at temperature "
        f"{run.get('temperature', '?')}. Held-out bits per byte of these weights: "
        f"{_fmt(run.get('bpb_replayed', 'n/a'))} (the search measured "
        f"{_fmt(run.get('bpb_searched', 'n/a'))}).",
        "",
    ]


def _objectives(facts: CardFacts) -> list[str]:
    m, limits = facts.metrics, facts.device_limits
    proxy = facts.identity.get("proxy", {})
    return [
        "## Objectives (as scored in the search)",
        "",
        "| objective | value |",
        "|---|---|",
        f"| held-out bits per byte (proxy training, after compression) | {_metric(m, 'bpb')} |",
        f"| bits per byte before compression | {_metric(m, 'bpb_uncompressed')} |",
        f"| decode latency, predicted | {_metric(m, 'decode_ms', 'ms/token', 2)} |",
        f"| decode throughput, predicted | {_metric(m, 'tokens_per_s', 'tokens/s', 1)} |",
        f"| prefill latency, predicted | {_metric(m, 'prefill_ms', 'ms', 1)} |",
        f"| memory on the device, predicted | {_metric(m, 'memory_mb', 'MB', 1)} |",
        "",
        f"Latency and memory predictor: {_calibration(facts)}.",
        f"Device limits of the study: memory ≤ {limits.get('max_memory_mb', 'n/a')} MB, decode ≤ "
        f"{_fmt(limits.get('max_decode_ms', 'n/a'), 1)} ms/token, latency quoted at a context of "
        f"{limits.get('context_len', 'n/a')} tokens and a prompt of "
        f"{limits.get('prompt_len', 'n/a')} tokens.",
        f"The proxy trained {proxy.get('steps', '?')} steps × {proxy.get('batch_size', '?')} × "
        f"{proxy.get('seq_len', '?')} tokens on `{proxy.get('corpus', '?')}` at its first rung: "
        "its bits per byte rank candidates, they are not the quality of a fully trained model.",
        *_target(facts.target),
        "",
    ]


def _target(target: dict[str, Any] | None) -> list[str]:
    if not target or not target.get("tokens"):
        return []
    judged = ""
    if "judged_bpb" in target:
        judged = (
            f" The search judged this model at {target['judged_bpb']:.3f} ± "
            f"{target.get('judged_sd', float('nan')):.3f} bits per byte there "
            f"({target.get('judged_on', 'measured')})."
        )
    return [
        f"Training target: {int(target['tokens']):,} tokens.{judged} `python -m nas.train` "
        "trains to it unless `steps=` says otherwise."
    ]


def _architecture(facts: CardFacts) -> list[str]:
    m, a = facts.metrics, facts.arch
    experts = (
        "dense"
        if a.get("n_experts", 1) == 1
        else f"{a['experts_per_token']} of {a['n_experts']} experts, MoE every "
        f"{a.get('moe_every', 1)} layer(s)"
    )
    return [
        "## Architecture",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {_count(m, 'params')} |",
        f"| active parameters per token | {_count(m, 'active_params')} |",
        f"| non-embedding parameters | {_count(m, 'non_embedding_params')} |",
        f"| layers × width | {a['n_layers']} × {a['d_model']} |",
        f"| attention heads / kv heads × head dim | {a['n_heads']} / {a['n_kv_heads']} × "
        f"{a['head_dim']} |",
        f"| FFN (SwiGLU) hidden size | {a['ffn_dim']} |",
        f"| experts | {experts} |",
        f"| tied embeddings | {'yes' if a.get('tie_embeddings') else 'no'} |",
        f"| vocabulary | {a['vocab_size']} ({_vocabulary(facts)}, `tokenizer.json`) |",
        "",
    ]


def _vocabulary(facts: CardFacts) -> str:
    return "byte-level BPE" if facts.parent is None else "the parent's tokenizer"


def _provenance(facts: CardFacts) -> list[str]:
    proxy = facts.identity.get("proxy", {})
    space = facts.identity.get("search_space", {})
    return [
        "## Provenance",
        "",
        f"- study `{facts.study}`, trial {facts.trial}, seed {proxy.get('seed', 'n/a')}",
        f"- search space `{space.get('name', 'n/a')}`; corpus `{proxy.get('corpus', 'n/a')}` "
        f"(fingerprint {proxy.get('corpus_fingerprint', 'n/a')})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in facts.versions.items()),
        "",
        "## Files",
        "",
        *[f"- `{name}`" for name in facts.files],
        "",
        "```python",
        "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer",
        'model = AutoModelForCausalLM.from_pretrained(".")  # the trained weights'
        if facts.parent is not None
        else 'model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained("."))',
        'tokenizer = AutoTokenizer.from_pretrained(".")',
        "```",
        "",
    ]


def _weights(c: dict[str, Any], recipe: dict[str, Any] | None = None) -> str:
    if c.get("weight_bits", 16) == 16:
        return "fp16"
    if ((recipe or {}).get("quantization") or {}).get("format") == "xnnpack":  # ExecuTorch's
        scales = (
            "one scale per output channel"
            if c["weight_bits"] == 8
            else (f"one bf16 scale per {c['group_size']} weights")
        )
        return f"int{c['weight_bits']}, {scales}, int8 activations per token (XNNPACK)"
    return f"int{c['weight_bits']}, one fp16 scale per {c['group_size']} weights"


def _steps(recipe: dict[str, Any] | None) -> str:
    if not recipe:
        return "The trial recorded no step-by-step recipe."
    order = recipe.get("order", ("structured", "sparsity", "recovery", "quantization"))
    done = [f"{name} ({_step_detail(recipe[name])})" for name in order if recipe.get(name)]
    if not done:
        return "Recipe: no compression step."
    return "Recipe, in order: " + "; ".join(done) + "."


def _step_detail(step: dict[str, Any]) -> str:
    shown = ("pattern", "bits", "group_size", "method", "backend", "steps", "heads", "ffn")
    return ", ".join(f"{k} {step[k]}" for k in shown if step.get(k) not in (None, "", 0, 0.0))


def _sparsity(c: dict[str, Any]) -> str:
    pattern = c.get("sparsity_pattern", "none")
    if pattern == "none":
        return "none"
    return f"{pattern} ({c.get('sparsity', 0):.0%} of the linear-layer weights)"
