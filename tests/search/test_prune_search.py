"""search_space=prune end to end, from a tiny dense parent and a tiny Qwen3-MoE parent: the study
runs and resumes, every candidate is a valid child of its parent trained by distillation, the
parent's own bits per byte is recorded, and an exported child reproduces its logits in a fresh
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from tokenizers import Tokenizer

from nas import records
from nas.arch import ArchConfig
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.export.run import run_export
from nas.export.weights import trained_child
from nas.parent import load_parent
from nas.search.run import run_search
from nas.study.lookup import load, resolve
from nas.study.storage import open_storage

FRESH = """
import sys, torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).float().eval()
with torch.no_grad():
    torch.save(model(input_ids=torch.load(sys.argv[2])).logits, sys.argv[3])
"""


def prune_settings(smoke_overrides: list[str], parent: Path, *extra: str):
    return load_settings(
        [*smoke_overrides, "search_space=prune", f"search_space.parent={parent}", *extra]
    )


def complete(cfg) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=cfg.study.name, storage=cfg.study.storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def assert_children_of(parent: ArchConfig, trials: list[optuna.trial.FrozenTrial]) -> None:
    for trial in trials:
        child = ArchConfig.from_dict(trial.user_attrs["arch"])  # valid: __post_init__ checks it
        assert child.d_model == parent.d_model and child.head_dim == parent.head_dim
        assert child.vocab_size == parent.vocab_size
        assert 1 <= child.n_layers <= parent.n_layers
        assert child.n_heads <= parent.n_heads and child.n_kv_heads <= parent.n_kv_heads
        assert child.ffn_dim <= parent.ffn_dim and child.n_experts <= parent.n_experts
        assert child.params <= parent.params


def fresh_logits(directory: Path, ids: torch.Tensor, tmp: Path) -> torch.Tensor:
    torch.save(ids, tmp / "ids.pt")
    subprocess.run(
        [sys.executable, "-c", FRESH, str(directory), str(tmp / "ids.pt"), str(tmp / "out.pt")],
        check=True,
        timeout=300,
    )
    return torch.load(tmp / "out.pt")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen3", "qwen3_moe"])
def test_a_prune_study_runs_resumes_and_exports_its_trained_child(
    family: str, tiny_parents: dict, smoke_overrides: list[str], tmp_path: Path
) -> None:
    directory = tiny_parents[family].directory
    parent = load_parent(directory)
    cfg = prune_settings(smoke_overrides, directory, "study.name=P", "study.n_trials=3")
    first = run_search(cfg)
    assert first.finished == 3
    trials = complete(cfg)
    assert_children_of(parent.arch, trials)
    assert all(t.user_attrs["trained"] for t in trials)  # smoke children fit a Pixel 8

    study = optuna.load_study(study_name="P", storage=cfg.study.storage)
    stored = records.parent(study)
    assert stored["fingerprint"] == parent.fingerprint
    # The parent has learned something: far better than a uniform guess (the reference's bpb).
    assert 0 < stored["bpb"] < records.reference(study)["bpb"]
    assert records.identity(study)["proxy"]["parent"]["fingerprint"] == parent.fingerprint
    header = json.loads((cfg.out_dir / "pareto.json").read_text())
    assert header["parent"]["bpb"] == stored["bpb"]
    # The study's tokenizer is the parent's.
    study_tokenizer = Tokenizer.from_file(str(cfg.out_dir / "tokenizer.json"))
    assert study_tokenizer.to_str() == Tokenizer.from_file(str(parent.tokenizer_file)).to_str()

    # Resuming adds only the new trials and measures the parent once.
    again = run_search(
        prune_settings(smoke_overrides, directory, "study.name=P", "study.n_trials=1")
    )
    assert again.finished == 4
    assert len({t.number for t in complete(cfg)}) == 4
    assert records.parent(optuna.load_study(study_name="P", storage=cfg.study.storage)) == stored

    # Export: the trained child's weights, loadable and identical in a fresh process.
    out = tmp_path / "child"
    finder = [f"runs_dir={cfg.runs_dir}", f"cache_dir={cfg.cache_dir}", "study.name=P"]
    other = tiny_parents["qwen3" if family == "llama" else "llama"].directory  # refused
    with pytest.raises(NasError, match="is not the one study 'P' searched"):
        run_export([*finder, "trial=best:bpb", f"out={out}", f"parent={other}"])
    assert not out.exists()
    (done,) = run_export([*finder, "trial=best:bpb", f"out={out}", "onnx=true"])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    written = json.loads((out / "nas_trial.json").read_text())
    replay = written["distillation"]
    assert replay["bpb_replayed"] == pytest.approx(replay["bpb_searched"], abs=1e-4)
    assert written["weights_check"]["max_abs_logit_diff"] <= 1e-4
    assert json.loads((out / "config.json").read_text())["model_type"] == family
    card = (out / "README.md").read_text()
    assert str(directory) in card and "temperature" in card and "layers" in card

    ref = resolve(finder)[0]
    exported = load(ref)
    record = records.read(next(t for t in exported.trials if t.number == done.trial))
    child = trained_child(exported, ref, record).model
    ids = torch.randint(
        0, parent.arch.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = child(input_ids=ids).logits
    got = fresh_logits(out, ids, tmp_path)
    assert (got - expected).abs().max().item() <= 1e-4
    # The searched shape's count, to the parameter; Qwen3 dense also carries per-head q/k norms,
    # which ArchConfig counts only for MoE (nas.arch has no family to tell them apart).
    arch = ArchConfig.from_dict(record.arch)
    qk_norms = 2 * arch.head_dim * arch.n_layers if family == "qwen3" else 0
    assert sum(p.numel() for p in child.parameters()) == done.params == arch.params + qk_norms


@pytest.mark.slow
def test_pool_workers_load_the_parent_themselves(
    tiny_parents: dict, smoke_overrides: list[str], tmp_path: Path
) -> None:
    """Two local workers on a journal: each loads the parent from its directory (the objective
    they are sent carries its fingerprint and importance, not its weights) and distils."""
    directory = tiny_parents["llama"].directory
    url = f"journal:///{tmp_path}/study.journal"
    cfg = prune_settings(
        smoke_overrides, directory, "study.name=W", f"study.storage={url}", "study.workers=2",
        "study.n_trials=2", "search_space.weight_bits=[16]", "search_space.sparsity=[none]",
    )  # fmt: skip
    finished = run_search(cfg).finished
    study = optuna.load_study(study_name="W", storage=open_storage(url))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # two places; a late promotion may run after them (`continues`: the candidate taken further)
    assert finished == len(trials) == 2 + sum("continues" in t.user_attrs for t in trials)
    assert all(t.user_attrs["trained"] for t in trials)
    assert {t.user_attrs["worker"]["pid"] for t in trials}.isdisjoint({os.getpid()})
    assert_children_of(load_parent(directory).arch, trials)
    assert records.parent(study)["bpb"] > 0
