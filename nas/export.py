"""`python -m nas.export study.name=S trial=N out=DIR`: a trial as a Hugging Face model directory.

The directory loads in `transformers` with no edits and no slm-nas installed:
`AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DIR))` builds the exact architecture
the search scored, and `AutoTokenizer.from_pretrained(DIR)` the tokenizer its trials used. Next to
them: the compression recipe (`compression.json`), a model card (`README.md`), the search's record
of the trial (`nas_trial.json`) and, unless `onnx=false`, `model.onnx` of the untrained model,
checked in ONNX Runtime against torch.

`trial=` takes a number, `pareto` (every member of the Pareto front, one sub-directory each) or
`best:METRIC` (the trained trial within the device limits with the best value of one metric, e.g.
`best:bpb`, `best:decode_ms`, `best:memory_mb`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from tokenizers import Tokenizer
from transformers import GenerationConfig, PreTrainedTokenizerFast

from nas.arch import ArchConfig, CompressionConfig
from nas.cli import configure_logging
from nas.corpus import SPECIAL_TOKENS
from nas.errors import NasError, redact, run_cli
from nas.lookup import StudyRef, load, resolve, split_args
from nas.model_card import CardFacts, render
from nas.models import build_model, hf_config
from nas.onnx_check import write_onnx
from nas.study import is_feasible

log = logging.getLogger("nas.export")

OWN_KEYS = ("trial", "out", "force", "onnx")
MAXIMISED = {"tokens_per_s"}  # every other metric is better when lower
COMPLETE = optuna.trial.TrialState.COMPLETE

USAGE = """usage: python -m nas.export study.name=NAME trial=N|pareto|best:METRIC [KEY=VALUE ...]

Writes a trial as a Hugging Face model directory (config.json, generation_config.json, tokenizer,
compression.json, README.md model card, nas_trial.json, model.onnx).
  trial=N              one trial by number
  trial=pareto         every Pareto member, one sub-directory trial-<N> each
  trial=best:METRIC    the trained trial within the device limits with the best METRIC
                       (bpb, decode_ms, prefill_ms, memory_mb, params, tokens_per_s, ...)
  out=DIR              default: <runs_dir>/<study>/export/<trial-N | pareto>
  force=true           write into an existing, non-empty out (files of the same name are replaced)
  onnx=false           skip model.onnx (its export takes ~10-20 s per model)
The study is found like the search finds it: study.name=, runs_dir=, study.storage= (or the
search's own overrides, e.g. hardware=rpi5 budget=smoke)."""


@dataclass(frozen=True)
class Exported:
    trial: int
    path: Path
    params: int


# --- choosing trials ----------------------------------------------------------------------------
def _usable(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == COMPLETE and bool(trial.user_attrs.get("trained")) and is_feasible(trial)


def _summary(study: optuna.Study) -> str:
    usable = [t.number for t in study.get_trials(deepcopy=False) if _usable(t)]
    shown = ", ".join(map(str, usable[:20])) + (" ..." if len(usable) > 20 else "")
    return f"trained trials within the device limits: {shown or 'none yet'}"


def _why_not(trial: optuna.trial.FrozenTrial) -> str | None:
    """Why a trial cannot be exported, or None when it can."""
    attrs = trial.user_attrs
    if trial.state != COMPLETE:
        reason = attrs.get("fail_reason") or attrs.get("requeued")
        return f"trial {trial.number} did not finish (state {trial.state.name})" + (
            f": {reason}" if reason else ""
        )
    if not attrs.get("trained"):
        return f"trial {trial.number} was never trained ({attrs.get('skipped', 'skipped')})"
    if not is_feasible(trial):
        return f"trial {trial.number} is over the device limits"
    return None


def pick_trials(study: optuna.Study, selection: str) -> list[optuna.trial.FrozenTrial]:
    """The trials `trial=` names; NasError with what exists when it names none."""
    trials = study.get_trials(deepcopy=False)
    if selection == "pareto":
        front = [t for t in study.best_trials if _usable(t)]
        if not front:
            raise NasError(f"study '{study.study_name}' has no Pareto front yet; {_summary(study)}")
        return sorted(front, key=lambda t: t.user_attrs["metrics"]["bpb"])
    if selection.startswith("best:") or selection == "best":
        metric = selection.partition(":")[2] or "bpb"
        usable = [t for t in trials if _usable(t)]
        if not usable:
            raise NasError(f"study '{study.study_name}' has no trained trial within the limits")
        known = sorted(k for k, v in usable[0].user_attrs["metrics"].items() if _number(v))
        if metric not in known:
            raise NasError(
                f"unknown metric '{metric}' for trial=best:METRIC; use one of: " + ", ".join(known)
            )
        sign = -1.0 if metric in MAXIMISED else 1.0
        return [min(usable, key=lambda t: (sign * t.user_attrs["metrics"][metric], t.number))]
    try:
        number = int(selection)
    except ValueError:
        raise NasError(
            f"trial={selection} is not a trial number, 'pareto' or 'best:METRIC'"
        ) from None
    by_number = {t.number: t for t in trials}
    if number not in by_number:
        span = f"0-{max(by_number)}" if by_number else "none"
        raise NasError(
            f"study '{study.study_name}' has no trial {number} (trials: {span}); {_summary(study)}"
        )
    reason = _why_not(by_number[number])
    if reason:
        raise NasError(f"{reason}; {_summary(study)}")
    return [by_number[number]]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- writing one directory ----------------------------------------------------------------------
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


def compression_recipe(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What compression.json holds: the searched settings and, when recorded, the full recipe."""
    comp = CompressionConfig(**trial.user_attrs["compression"])
    recipe = trial.user_attrs.get("recipe")
    return {
        "format": "slm-nas compression recipe v1",
        "compression": comp.to_dict(),
        "bits_per_weight": comp.bits_per_weight,
        "applies_to": "the linear layers of the decoder blocks; embeddings and LM head stay float",
        "recipe": recipe,
        "scored_after_compression": "bpb_uncompressed" in trial.user_attrs.get("metrics", {}),
    }


def _compression_note(recipe: dict[str, Any]) -> str:
    comp = recipe["compression"]
    if comp["weight_bits"] == 16 and comp["sparsity_pattern"] == "none":
        return "No compression: weights stay in 16-bit floats."
    return (
        "`python -m nas.train` applies this recipe to the trained weights at the end where the "
        "compression code supports it, and says in its output and `training.json` whether it did."
    )


def export_trial(
    study: optuna.Study,
    ref: StudyRef,
    trial: optuna.trial.FrozenTrial,
    out: Path,
    *,
    onnx: bool,
) -> Exported:
    """Write one trial's directory into `out` (files are written whole, then moved in place)."""
    attrs = trial.user_attrs
    arch = ArchConfig.from_dict(attrs["arch"])
    metrics = dict(attrs["metrics"])
    identity = study.user_attrs.get("identity", {})
    device = study.user_attrs.get("device") or _pareto_header(ref)
    limits = device.get("device_limits", {})
    context = int(limits.get("context_len") or 4096)
    tokenizer = wrap_tokenizer(ref.out_dir / "tokenizer.json", context)
    if len(tokenizer) != arch.vocab_size:
        raise NasError(
            f"{ref.out_dir / 'tokenizer.json'} has {len(tokenizer)} tokens but trial "
            f"{trial.number} was built for {arch.vocab_size}; the study's tokenizer was replaced"
        )
    config = hf_config(arch, max_positions=context)
    model_class = "LlamaForCausalLM" if arch.n_experts == 1 else "Qwen3MoeForCausalLM"
    config.architectures = [model_class]
    recipe = compression_recipe(trial)
    record = {
        "study": study.study_name,
        "storage": redact(ref.storage),
        "trial": trial.number,
        "arch": arch.to_dict(),
        "compression": recipe["compression"],
        "metrics": metrics,
        "identity": identity,
        "device": device,
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        config.save_pretrained(tmp)
        GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        ).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "compression.json").write_text(json.dumps(recipe, indent=2) + "\n")
        if onnx:
            seed = int(identity.get("proxy", {}).get("seed", 0))
            check = write_onnx(build_model(arch, seed=seed, max_positions=context), tmp)
            record["onnx_check"] = check
        (tmp / "nas_trial.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        files = [*sorted(p.name for p in tmp.iterdir()), "README.md"]
        facts = CardFacts(
            study=study.study_name,
            trial=trial.number,
            model_class=model_class,
            arch=arch.to_dict(),
            compression=recipe["compression"],
            metrics=metrics,
            identity=identity,
            device_limits=limits,
            predictor=device.get("latency_predictor", {}),
            compression_note=_compression_note(recipe),
            files=sorted(files),
            recipe=recipe["recipe"],
        )
        (tmp / "README.md").write_text(render(facts))
        for path in tmp.iterdir():
            path.replace(out / path.name)
    return Exported(trial.number, out, arch.params)


def _pareto_header(ref: StudyRef) -> dict[str, Any]:
    """Older studies keep their device limits only in pareto.json's header."""
    path = ref.out_dir / "pareto.json"
    if not path.is_file():
        return {}
    header = json.loads(path.read_text())
    return {k: header[k] for k in ("device_limits", "latency_predictor") if k in header}


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NasError(f"out={out} is a file; pass out=DIR for a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NasError(f"out={out} exists and is not empty; pass force=true or another out=DIR")


def _flag(own: dict[str, str], key: str, default: bool) -> bool:
    value = own.get(key)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise NasError(f"{key}={value} must be true or false")


def run_export(argv: list[str]) -> list[Exported]:
    """Export the trials `argv` names; the plain function behind the command (tests call it)."""
    overrides, own = split_args(argv, OWN_KEYS)
    if "studies" in own:
        raise NasError("export reads one study; pass study.name=NAME")
    selection = own.get("trial")
    refs = resolve(overrides, own)
    ref = refs[0]
    study = load(ref)
    if not selection:
        raise NasError(f"pass trial=N, trial=pareto or trial=best:bpb; {_summary(study)}")
    trials = pick_trials(study, selection)
    default = "pareto" if selection == "pareto" else f"trial-{trials[0].number}"
    out = Path(own.get("out") or ref.out_dir / "export" / default)
    force = _flag(own, "force", False)
    onnx = _flag(own, "onnx", True)
    _check_out(out, force)
    if selection == "pareto":
        targets = [(t, out / f"trial-{t.number}") for t in trials]
    else:
        targets = [(trials[0], out)]
    done = []
    for trial, path in targets:
        log.info("exporting trial %d of %s to %s", trial.number, study.study_name, path)
        done.append(export_trial(study, ref, trial, path, onnx=onnx))
    return done


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    configure_logging()
    for item in run_export(argv):
        print(f"trial {item.trial}: {item.params:,} parameters -> {item.path}")
    print(
        "load with: AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DIR)); "
        "train with: python -m nas.train DIR"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
