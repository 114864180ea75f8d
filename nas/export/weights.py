"""A prune study's trial exported with its weights: the child the search trained, rebuilt.

The database holds no weights (many machines share only the database), but a trial's training is
deterministic: the child is pruned from the parent by the stored importance rule, and its batches
are a function of seed and step (`nas.quality.training.batch_at`). So the export loads the parent
from its directory (its fingerprint must be the study's), reads the corpus with the parent's
tokenizer as the search did, and re-runs seed 0's distillation up to the trial's judged rung, trunk
and decay branch (`nas.quality.pruned.replay`). The replayed child's held-out bits per byte is
compared with the one the search stored, and its weights are written with `save_pretrained`
(safetensors), reloaded from disk and checked against the model in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from nas import records
from nas.arch import ArchConfig
from nas.config.schema import ProxySettings
from nas.errors import NasError
from nas.fidelity.rungs import Rungs
from nas.study.lookup import StudyRef

log = logging.getLogger("nas.export")
CHECK_IDS = (2, 24)  # batch and length of the logits compared after a reload
MAX_LOGIT_DIFF = 1e-4


@dataclass
class Child:
    """The trained child of one trial, and how it was obtained."""

    model: torch.nn.Module
    parent: dict[str, Any]  # the study's `parent` attribute (nas.records.parent)
    run: dict[str, Any]  # the replayed distillation: rung, steps, seed, temperature, bpb


def is_pruned(study: optuna.Study) -> bool:
    return records.parent(study) is not None


def _proxy_settings(proxy: dict[str, Any]) -> ProxySettings:
    return ProxySettings(**{f.name: proxy[f.name] for f in dataclasses.fields(ProxySettings)})


def _rungs(proxy: dict[str, Any]) -> Rungs:
    fidelity = proxy.get("fidelity", {})
    return Rungs(
        steps=proxy["steps"],
        eta=fidelity.get("eta", 3.0),
        count=fidelity.get("rungs", 1),
        seeds=fidelity.get("seeds", 1),
        decay_fraction=proxy["decay_fraction"],
    )


def trained_child(
    study: optuna.Study, ref: StudyRef, record: records.TrialRecord, directory: str = ""
) -> Child:
    """Replay the trial's seed-0 run to its judged rung; `directory` overrides where the
    parent is (default: where the search found it)."""
    from nas.parent import load_parent
    from nas.quality.data import prepare_data
    from nas.quality.pruned import check_vocabulary, load_pruning, replay, with_parent_tokenizer

    stored = records.parent(study) or {}
    identity = records.identity(study) or {}
    proxy, every = identity.get("proxy", {}), identity.get("settings", {})
    parent = load_parent(directory or stored["directory"])
    if parent.fingerprint != stored["fingerprint"]:
        raise NasError(
            f"the parent at {parent.directory} is not the one study '{study.study_name}' searched "
            f"(fingerprint {parent.fingerprint}, the study's {stored['fingerprint']}); pass "
            "parent=DIR with that checkpoint"
        )
    data_settings = dataclasses.replace(
        ref.settings.proxy,
        corpus=every.get("proxy.corpus", ref.settings.proxy.corpus),
        corpus_mb=every.get("proxy.corpus_mb", ref.settings.proxy.corpus_mb),
        heldout_fraction=every.get("proxy.heldout_fraction", ref.settings.proxy.heldout_fraction),
    )
    cache = Path(ref.settings.cache_dir)
    data, _, info = prepare_data(with_parent_tokenizer(data_settings, parent), cache)
    check_vocabulary(parent, info["vocab_size"])
    if info["corpus_fingerprint"] != proxy.get("corpus_fingerprint"):
        raise NasError(
            f"the corpus {info['corpus']} is not the text study '{study.study_name}' trained on; "
            "export on a machine with the study's corpus"
        )
    settings, rungs = _proxy_settings(proxy), _rungs(proxy)
    distill = proxy["parent"]["distill"]
    pruning = load_pruning(
        parent,
        data,
        info,
        settings,
        cache,
        temperature=distill["temperature"],
        weight=distill["weight"],
    )
    arch, seed = ArchConfig.from_dict(record.arch), int(proxy.get("seed", 0))
    rung = record.rung
    log.info("replaying trial %d's distillation to rung %d (seed %d)", record.number, rung, seed)
    run = replay(pruning, arch, data, settings, rungs, rung, seed)
    replayed = run.evaluate()
    entry = record.rung_result(rung) or {}
    searched = (entry.get("bpb_uncompressed_seeds") or [math.nan])[0]
    if not math.isclose(replayed, searched, abs_tol=1e-3):
        log.warning(
            "the replayed child scores %.5f bits per byte, the search stored %.5f (another "
            "device or thread count rounds differently)",
            replayed,
            searched,
        )
    facts = {
        "rung": rung,
        "steps": run.step,
        "tokens": run.tokens,
        "seed": seed,
        "temperature": distill["temperature"],
        "weight": distill["weight"],
        "schedule": settings.schedule,
        "lr": settings.lr,
        "bpb_replayed": replayed,
        "bpb_searched": searched,
    }
    return Child(run.model.eval(), {**stored, "directory": str(parent.directory)}, facts)


def save_child(child: Child, out: Path) -> dict[str, Any]:
    """config.json, model.safetensors and generation_config.json of the child, then the same
    logits from a reload of `out` (else NasError): the check export records."""
    from transformers import AutoModelForCausalLM

    model = child.model
    model.save_pretrained(out, safe_serialization=True)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(0, vocab, CHECK_IDS, generator=torch.Generator().manual_seed(0))
    reloaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).float().eval()
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max().item()
    if not diff <= MAX_LOGIT_DIFF:
        raise NasError(
            f"the saved child's logits differ from the trained child's by {diff:.3g} "
            f"(> {MAX_LOGIT_DIFF}); the export was not written"
        )
    return {"max_abs_logit_diff": diff, "input_shape": list(CHECK_IDS), "weights": "safetensors"}


def parent_tokenizer(directory: Path, context: int) -> Any:
    """The parent's own tokenizer: its tokenizer_config.json when it has one (special tokens as
    its authors named them), else its tokenizer.json with the engine's special tokens."""
    if (directory / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    from nas.export.write import wrap_tokenizer

    return wrap_tokenizer(directory / "tokenizer.json", context)


def pruned_summary(parent: dict[str, Any], arch: dict[str, Any]) -> dict[str, str]:
    """What of the parent each axis kept: `kept of parent` per layers, heads, kv heads, FFN
    channels and experts."""
    whole = parent.get("arch", {})
    axes = {
        "layers": "n_layers",
        "attention heads": "n_heads",
        "kv heads": "n_kv_heads",
        "FFN channels": "ffn_dim",
        "experts": "n_experts",
    }
    return {name: f"{arch.get(key)} of {whole.get(key, '?')}" for name, key in axes.items()}
