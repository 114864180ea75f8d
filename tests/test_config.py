"""Every config group option composes; bad overrides give one line naming the valid choices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nas.config.compose import load_settings
from nas.errors import NasError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "hydra_configs"
GROUPS = ("hardware", "search_space", "budget", "proxy", "sampler", "study")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in GROUPS for o in _options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    overrides = ([f"{group}={option}", "budget=smoke"] if group != "budget" else
                 [f"budget={option}"])  # fmt: skip
    if (group, option) == ("search_space", "prune"):  # built only from a parent's config.json
        from transformers import LlamaConfig

        LlamaConfig(hidden_size=64, num_attention_heads=4, vocab_size=512).save_pretrained(tmp_path)
        overrides.append(f"search_space.parent={tmp_path}")
    cfg = load_settings(overrides)
    assert getattr(cfg, group)
    assert cfg.study.name and cfg.study.storage.startswith("sqlite:///")


@pytest.mark.parametrize("option", _options("hardware"))
def test_hardware_profiles_have_sources_and_budgets(option: str) -> None:
    profile = load_settings([f"hardware={option}"]).hardware
    assert profile.sources.get("compute") and profile.sources.get("memory")
    assert profile.deploy.max_memory_mb > 0 and profile.deploy.max_decode_ms > 0
    assert profile.deploy.prompt_len <= profile.deploy.context_len


def test_pixel8_budget_is_2gb_and_20_tokens_per_s() -> None:
    deploy = load_settings(["hardware=pixel8"]).hardware.deploy
    assert deploy.max_memory_mb == 2048 and deploy.min_tokens_per_s == 20


@pytest.mark.parametrize(
    "overrides, expected",
    [(["hardware=pixel8"], True), (["hardware=local_cpu"], True), (["hardware=h100"], False),
     (["hardware=local_cpu", "compression.int8_activations=false"], False)],
)  # fmt: skip
def test_int8_activations_default_to_the_runtimes_fast_format(
    overrides: list[str], expected: bool
) -> None:
    """CPUs run int8/int4 fast only with int8 compute; GPUs dequantize to fp16. Weight-only
    stays an explicit choice."""
    settings = load_settings(["budget=smoke", *overrides])
    assert settings.compression.int8_activations is expected


def test_auto_budget_picks_cpu_without_cuda() -> None:
    import torch

    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert load_settings([]).budget.name == expected
    assert load_settings(["budget=auto"]).budget.name == expected


def test_study_name_and_storage_derive_from_choices() -> None:
    cfg = load_settings(["hardware=rpi5", "budget=smoke", "runs_dir=/tmp/x"])
    assert cfg.study.name == "rpi5-slm-smoke"
    assert cfg.study.storage == "sqlite:////tmp/x/rpi5-slm-smoke/study.db"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("hardware=pixel9", "unknown hardware 'pixel9'; choose one of: a100,"),
        ("budget=huge", "unknown budget 'huge'; choose one of: cpu, gpu, smoke"),
        ("proxy.lrr=1", "unknown key 'proxy.lrr'; 'proxy' has: steps, seq_len, batch_size, eval"),
        ("nonsense=1", "unknown key 'nonsense'; the top level has: hardware"),
        ("hardware.deploy.max_ram=3", "unknown key 'hardware.deploy.max_ram'"),
    ],
)
def test_bad_override_names_the_valid_choices(override: str, expected: str) -> None:
    with pytest.raises(NasError) as err:
        load_settings([override])
    assert str(err.value).startswith(expected)


def test_cli_prints_one_line_and_exits_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "nas.search", "hardware=pixel9"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert "unknown hardware 'pixel9'" in run.stderr and "pixel8" in run.stderr
    assert "Traceback" not in run.stderr
