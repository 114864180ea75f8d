"""Every configuration key is either part of a study's identity or allowed to vary, with a
reason; a resume that changes an identity key is refused before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nas.config.compose import load_settings
from nas.errors import NasError
from nas.search.run import run_search
from nas.study.identity import IDENTITY, VARIES, classify, leaves, settings_identity

CONFIGS = Path(__file__).resolve().parents[2] / "hydra_configs"
GROUPS = ("hardware", "search_space", "budget", "proxy", "sampler", "compression", "study",
          "runtime")  # fmt: skip


def _every_key(parent: Path) -> set[str]:
    keys: set[str] = set()
    for group in GROUPS:
        for option in sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")):
            overrides = ([f"{group}={option}", "budget=smoke"] if group != "budget"
                         else [f"budget={option}"])  # fmt: skip
            if (group, option) == ("search_space", "prune"):
                overrides.append(f"search_space.parent={parent}")
            settings = load_settings(overrides)
            keys.update(key for key, _ in leaves(settings))
    return keys


def test_every_configuration_key_has_a_class_and_a_reason(tmp_path: Path) -> None:
    # search_space=prune is built only with a parent: a config.json is all it reads
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=64, num_attention_heads=4, vocab_size=512).save_pretrained(tmp_path)
    keys = _every_key(tmp_path)
    assert len(keys) > 80  # the whole configuration, every group option's keys
    for key in keys:
        kind, why = classify(key)
        assert kind in (IDENTITY, VARIES) and len(why) > 10, key


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("hardware.bandwidth_gbs", IDENTITY),
        ("hardware.deploy.max_memory_mb", IDENTITY),
        ("compression.recovery_steps", IDENTITY),
        ("proxy.tokenizer", IDENTITY),
        ("budget.rungs", IDENTITY),
        ("sampler.n_startup_trials", VARIES),
        ("study.workers", VARIES),
        ("target.tokens", VARIES),
        ("hardware.sources.compute", VARIES),
    ],
)
def test_the_classes_say_what_changes_a_stored_value(key: str, kind: str) -> None:
    assert classify(key)[0] == kind


def test_a_new_key_without_a_rule_is_an_error() -> None:
    with pytest.raises(KeyError, match="no identity rule"):
        classify("brand_new_setting")


def test_the_identity_holds_every_identity_key() -> None:
    base = settings_identity(load_settings(["budget=smoke"]))
    assert base["hardware.bandwidth_gbs"] == 51.0
    assert "study.workers" not in base and "sampler._target_" not in base
    other = settings_identity(load_settings(["budget=smoke", "hardware.bandwidth_gbs=60"]))
    assert {k for k in base if base[k] != other[k]} == {"hardware.bandwidth_gbs"}


@pytest.mark.parametrize(
    "change",
    ["hardware.bandwidth_gbs=60", "hardware.deploy.max_memory_mb=1024",
     "compression.recovery_steps=2"],
)  # fmt: skip
def test_a_resume_that_changes_a_stored_value_is_refused_before_any_write(
    change: str, tmp_path: Path, shared_cache: Path, tiny: list[str]
) -> None:
    base = ["budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}", "quiet=true",
            *tiny, "study.name=I", "study.n_trials=1"]  # fmt: skip
    run_search(load_settings(base))
    out = tmp_path / "I"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(NasError, match=r"started with other settings \(.*" + change.split("=")[0]):
        run_search(load_settings([*base, change]))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_study_from_before_the_runtime_was_identity_resumes_only_on_onnxruntime() -> None:
    from nas.study.identity import differences

    before = {"settings": {"seed": 0}}  # stored before runtime.* became identity keys
    ort = settings_identity(load_settings(["budget=smoke"]))
    et = settings_identity(load_settings(["budget=smoke", "runtime=executorch"]))
    assert {"runtime.name", "runtime.delegate"} <= set(ort)
    now = {"settings": {"seed": 0, **{k: ort[k] for k in ("runtime.name", "runtime.delegate")}}}
    assert differences(before, now) == []
    later = {"settings": {"seed": 0, **{k: et[k] for k in ("runtime.name", "runtime.delegate")}}}
    assert differences(before, later) == ["runtime.delegate", "runtime.name"]


def test_a_study_from_before_distillation_settings_resumes_at_their_defaults() -> None:
    from nas.study.identity import differences

    keys = ("proxy.distill_temperature", "proxy.distill_weight", "proxy.distill_lr")
    now = settings_identity(load_settings(["budget=smoke"]))
    assert (
        differences(
            {"settings": {"seed": 0}}, {"settings": {"seed": 0, **{k: now[k] for k in keys}}}
        )
        == []
    )
    hotter = settings_identity(load_settings(["budget=smoke", "proxy.distill_temperature=4"]))
    changed = {"settings": {"seed": 0, **{k: hotter[k] for k in keys}}}
    assert differences({"settings": {"seed": 0}}, changed) == ["proxy.distill_temperature"]


@pytest.mark.slow
def test_a_resume_with_another_parent_at_the_same_path_is_refused_before_any_write(
    tmp_path: Path, shared_cache: Path, tiny_parents: dict, untrained_parents: dict
) -> None:
    """The parent's fingerprint (its weights), not its path, is the study's identity."""
    parent = tmp_path / "parent"
    shutil.copytree(tiny_parents["llama"].directory, parent)
    base = ["budget=smoke", f"runs_dir={tmp_path / 'runs'}", f"cache_dir={shared_cache}",
            "quiet=true", "search_space=prune", f"search_space.parent={parent}",
            "study.name=P", "study.n_trials=0"]  # fmt: skip
    run_search(load_settings(base))  # the study, its parent and the parent's bpb
    out = tmp_path / "runs" / "P"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for weights in untrained_parents["llama"].directory.glob("*.safetensors"):
        shutil.copy(weights, parent / weights.name)  # same path and config, other weights
    with pytest.raises(NasError, match=r"started with other settings \(proxy: parent"):
        run_search(load_settings(base))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
