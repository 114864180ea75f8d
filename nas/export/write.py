"""Write one trial as a Hugging Face model directory that loads in `transformers` unedited.

`AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DIR))` builds the exact architecture
the search scored, and `AutoTokenizer.from_pretrained(DIR)` the tokenizer its trials used. Next to
them: the compression recipe (`compression.json`), a model card (`README.md`), the search's record
of the trial (`nas_trial.json`) and, unless `onnx=false`, `model.onnx` of the untrained model,
checked in ONNX Runtime against torch. With `runtime=executorch`, also `model.pte`: the untrained
model's decode step in the trial's format, checked in ExecuTorch against torch
(`nas.executorch.check`). Files are written into a temporary folder, then moved in.

A prune study's trial (`search_space=prune`) is exported with its weights instead: the child the
search trained, rebuilt by replaying its distillation (`nas.export.weights`), in its parent's
family, with the parent's tokenizer; `AutoModelForCausalLM.from_pretrained(DIR)` loads it, and
model.onnx holds those trained weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from tokenizers import Tokenizer
from transformers import GenerationConfig, PreTrainedTokenizerFast

from nas import records
from nas.arch import ArchConfig, CompressionConfig
from nas.errors import NasError, interrupts_deferred, redact
from nas.executorch.quantize import format_name
from nas.executorch.runtime import require as require_executorch
from nas.export.card import CardFacts, render
from nas.export.weights import (
    Child,
    is_pruned,
    parent_tokenizer,
    pruned_summary,
    save_child,
    trained_child,
)
from nas.fidelity.judge import judge
from nas.onnx.check import write_onnx
from nas.quality.corpus import SPECIAL_TOKENS
from nas.quality.models import build_model, count_params, hf_config
from nas.study.lookup import StudyRef

log = logging.getLogger("nas.export")


@dataclass(frozen=True)
class Exported:
    trial: int
    path: Path
    params: int
    weights: bool = False  # a prune study's trained child: from_pretrained loads it


def wrap_tokenizer(path: Path, model_max_length: int) -> PreTrainedTokenizerFast:
    """The study's tokenizer.json as a `transformers` tokenizer with its special tokens named."""
    if not path.is_file():
        raise NasError(
            f"the study's tokenizer is missing ({path}); run the study's search command once "
            "more with study.n_trials=0 to write it"
        )
    eos, pad = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(path)),
        bos_token=eos,
        eos_token=eos,
        pad_token=pad,
        model_max_length=model_max_length,
    )


def compression_recipe(record: records.TrialRecord) -> dict[str, Any]:
    """What compression.json holds: the searched settings and, when recorded, the full recipe."""
    comp = CompressionConfig(**record.compression)
    return {
        "format": "slm-nas compression recipe v1",
        "compression": comp.to_dict(),
        "bits_per_weight": comp.bits_per_weight,
        "applies_to": "the linear layers of the decoder blocks; embeddings and LM head stay float",
        "recipe": record.recipe,
        "runtime_format": runtime_format(record.recipe),
        "scored_after_compression": "bpb_uncompressed" in record.metrics,
    }


def runtime_format(recipe: dict[str, Any] | None) -> str | None:
    """The deployed int8/int4 format the trial was scored in, as the runtime is told to run it."""
    quant = (recipe or {}).get("quantization")
    if not quant:
        return None
    bits, group = quant["bits"], quant["group_size"]
    if quant.get("format") == "xnnpack":
        return format_name(bits, group or None)
    if quant.get("activations") == "int8":
        return (
            f"ONNX Runtime MatMulNBits int{bits} g{group}, accuracy_level=4 (activations "
            "quantized to int8 per group on the fly: the fast CPU kernels)"
        )
    return f"ONNX Runtime MatMulNBits int{bits} g{group}, float compute (weight-only)"


def _compression_note(recipe: dict[str, Any]) -> str:
    comp = recipe["compression"]
    if comp["weight_bits"] == 16 and comp["sparsity_pattern"] == "none":
        return "No compression: weights stay in 16-bit floats."
    return (
        "`python -m nas.train` applies this recipe to the trained weights at the end where the "
        "compression code supports it, and says in its output and `training.json` whether it did."
    )


@dataclass(frozen=True)
class _Trial:
    """One trial as export sees it: its record, architecture and the study's context."""

    study: optuna.Study
    ref: StudyRef
    trial: optuna.trial.FrozenTrial
    record: records.TrialRecord
    arch: ArchConfig
    device: dict[str, Any]
    runtime: str  # the `runtime` group's name: executorch adds model.pte
    child: Child | None = None  # a prune study's trained child (its weights are exported)

    @property
    def context(self) -> int:
        return int(self.device.get("device_limits", {}).get("context_len") or 4096)

    @property
    def target(self) -> dict[str, Any]:
        """The training length the study judged its front at; `nas.train` trains to it."""
        target = dict(records.target(self.study) or {})
        judged = {j.record.number: j for j in judge(self.study.get_trials(deepcopy=False), target)}
        mine = judged.get(self.record.number)
        if mine is not None:
            target.update(judged_bpb=mine.quality, judged_sd=mine.sd, judged_on=mine.basis)
        return target

    @property
    def trained_arch(self) -> ArchConfig:
        """The shape the trial trained: larger than `arch` when it was pruned afterwards."""
        shrink = self.record.shrink
        return self.arch if not shrink else ArchConfig.from_dict(shrink["trained"])

    @property
    def model_class(self) -> str:
        if self.child is not None:
            return type(self.child.model).__name__
        return "LlamaForCausalLM" if self.arch.n_experts == 1 else "Qwen3MoeForCausalLM"


def export_trial(
    study: optuna.Study,
    ref: StudyRef,
    trial: optuna.trial.FrozenTrial,
    out: Path,
    *,
    onnx: bool,
    parent: str = "",
) -> Exported:
    """Write one trial's directory into `out` (files are written whole, then moved in place);
    `parent` is where a prune study's parent is, when not where the search found it."""
    record = records.read(trial)
    runtime = ref.settings.runtime.name
    if runtime == "executorch":
        require_executorch()  # one line saying how to install it, before anything is written
    this = _Trial(
        study,
        ref,
        trial,
        record,
        ArchConfig.from_dict(record.arch),
        records.device(study) or _pareto_header(ref),
        runtime,
    )
    if is_pruned(study):  # the trained child, replayed before anything is written
        this = dataclasses.replace(this, child=trained_child(study, ref, record, parent))
        assert this.child is not None
        tokenizer = parent_tokenizer(Path(this.child.parent["directory"]), this.context)
    else:
        tokenizer = wrap_tokenizer(ref.out_dir / "tokenizer.json", this.context)
    if len(tokenizer) > this.arch.vocab_size or (
        this.child is None and len(tokenizer) != this.arch.vocab_size
    ):
        raise NasError(
            f"{ref.out_dir / 'tokenizer.json'} has {len(tokenizer)} tokens but trial "
            f"{trial.number} was built for {this.arch.vocab_size}; the study's tokenizer was "
            "replaced"
        )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        _write_files(this, tokenizer, tmp, onnx=onnx)
        # Ctrl-C or SIGTERM waits for the moves: a force=true export never mixes old and new.
        with interrupts_deferred():
            for path in tmp.iterdir():
                path.replace(out / path.name)
    if this.child is None:
        return Exported(trial.number, out, this.arch.params)
    # The saved model's own count (Qwen3's dense q/k norms are not in ArchConfig.params).
    return Exported(trial.number, out, count_params(this.child.model), weights=True)


def _write_files(
    this: _Trial, tokenizer: PreTrainedTokenizerFast, tmp: Path, *, onnx: bool
) -> None:
    child = this.child
    weights_check = None
    if child is not None:  # config.json, model.safetensors, generation_config.json
        weights_check = save_child(child, tmp)
    else:
        # A shrink trial's config is the shape it trained: `nas.train` trains that and prunes it
        # as compression.json says, as the trial did. model.onnx is the deployed (pruned) shape.
        config = hf_config(this.trained_arch, max_positions=this.context)
        config.architectures = [this.model_class]
        config.save_pretrained(tmp)
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        ).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    recipe = compression_recipe(this.record)
    (tmp / "compression.json").write_text(json.dumps(recipe, indent=2) + "\n")
    identity = records.identity(this.study) or {}
    trial_file = {
        "study": this.study.study_name,
        "storage": redact(this.ref.storage),
        "trial": this.record.number,
        "arch": this.arch.to_dict(),
        "compression": recipe["compression"],
        "metrics": this.record.metrics,
        "identity": identity,
        **({"shrink": this.record.shrink} if this.record.shrink else {}),
        "device": this.device,
        "training_target": this.target,
    }
    if child is not None:
        trial_file.update(parent=child.parent, distillation=child.run, weights_check=weights_check)
    pte = this.runtime == "executorch"
    if child is not None:
        model = child.model
    elif onnx or pte:
        seed = int(identity.get("proxy", {}).get("seed", 0))
        model = build_model(this.arch, seed=seed, max_positions=this.context)
    if onnx:
        trial_file["onnx_check"] = write_onnx(model, tmp)
    if pte:
        from nas.executorch.check import write_pte  # deferred: loads ExecuTorch and torchao

        comp = recipe["compression"]
        trial_file["pte_check"] = write_pte(
            model,
            tmp,
            weight_bits=comp["weight_bits"],
            group_size=comp["group_size"] or None,
            context_len=this.context,
        )
        quant = (this.record.recipe or {}).get("quantization")
        scored_in = quant.get("format", "matmulnbits") if quant else None  # older: ORT's
        if scored_in not in (None, "xnnpack"):  # int8/int4 scored by an ONNX Runtime study
            trial_file["pte_check"]["quality_scored_in"] = scored_in
            log.warning(
                "trial %d's bpb was scored in ONNX Runtime's int%d numerics (%s); model.pte runs "
                "XNNPACK's, so its quality may differ slightly: search with runtime=executorch "
                "to score in them",
                this.record.number,
                comp["weight_bits"],
                scored_in,
            )
    (tmp / "nas_trial.json").write_text(json.dumps(trial_file, indent=2, default=str) + "\n")
    files = [*sorted(p.name for p in tmp.iterdir()), "README.md"]
    facts = CardFacts(
        study=this.study.study_name,
        trial=this.record.number,
        model_class=this.model_class,
        arch=this.arch.to_dict(),
        compression=recipe["compression"],
        metrics=this.record.metrics,
        identity=identity,
        device_limits=this.device.get("device_limits", {}),
        predictor=this.device.get("latency_predictor", {}),
        compression_note=_compression_note(recipe),
        files=sorted(files),
        recipe=recipe["recipe"],
        target=this.target,
        parent=None if child is None else child.parent,
        distillation=None if child is None else child.run,
        pruned=None if child is None else pruned_summary(child.parent, this.arch.to_dict()),
        trained_arch=this.record.shrink["trained"] if this.record.shrink else None,
    )
    (tmp / "README.md").write_text(render(facts))


def _pareto_header(ref: StudyRef) -> dict[str, Any]:
    """Older studies keep their device limits only in pareto.json's header."""
    path = ref.out_dir / "pareto.json"
    if not path.is_file():
        return {}
    header = json.loads(path.read_text())
    return {k: header[k] for k in ("device_limits", "latency_predictor") if k in header}
