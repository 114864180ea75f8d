"""Export: a trial becomes a Hugging Face directory that loads without edits, dense and MoE."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from nas.arch import ArchConfig
from nas.config.compose import load_settings
from nas.errors import NasError, run_cli
from nas.export.__main__ import main
from nas.export.run import run_export
from nas.search.run import run_search


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """Three smoke studies: dense only (D), MoE only (M), and all over the memory limit (I)."""
    runs_dir = tmp_path_factory.mktemp("export") / "runs"
    base = [
        "hardware=pixel8",
        "budget=smoke",
        f"runs_dir={runs_dir}",
        f"cache_dir={shared_cache}",
        "quiet=true",
    ]
    studies = {
        "D": ["search_space.n_experts=[1]", "study.n_trials=2"],
        "M": ["search_space.n_experts=[4]", "search_space.moe_every=[1]", "study.n_trials=2"],
        "I": ["hardware.deploy.max_memory_mb=1", "study.n_trials=1"],
    }
    for name, extra in studies.items():
        run_search(load_settings([*base, f"study.name={name}", *extra]))
    return runs_dir


def export(runs: Path, *args: str) -> list:
    return run_export([f"runs_dir={runs}", *args])


def pareto(runs: Path, study: str) -> dict[int, dict]:
    entries = json.loads((runs / study / "pareto.json").read_text())["pareto"]
    return {e["trial"]: e for e in entries}


def config_params(entry: dict) -> int:
    """The parameters an exported config.json describes: the searched shape, or for a trial that
    trained a larger shape and pruned it (`shrink`) the trained one, which `nas.train` trains
    and prunes as the recipe says."""
    trained = (entry.get("shrink") or {}).get("trained")
    return ArchConfig.from_dict(trained).params if trained else entry["metrics"]["params"]


def test_dense_and_moe_load_in_a_fresh_process_with_the_searched_parameter_count(
    runs: Path, tmp_path: Path
) -> None:
    expected = {}
    for study in ("D", "M"):
        (done,) = export(runs, f"study.name={study}", "trial=best:bpb", f"out={tmp_path / study}")
        expected[study] = config_params(pareto(runs, study)[done.trial])
    script = (
        "import json, sys\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d))\n"
        "    out[d] = [type(m).__name__, sum(p.numel() for p in m.parameters())]\n"
        "print(json.dumps(out))\n"
    )
    dirs = [str(tmp_path / s) for s in ("D", "M")]
    run = subprocess.run(
        [sys.executable, "-c", script, *dirs], capture_output=True, text=True, check=True
    )
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded[dirs[0]] == ["LlamaForCausalLM", expected["D"]]
    assert loaded[dirs[1]] == ["Qwen3MoeForCausalLM", expected["M"]]


def test_directory_holds_tokenizer_recipe_card_and_generation_config(
    runs: Path, tmp_path: Path
) -> None:
    (done,) = export(runs, "study.name=M", "trial=best:bpb", f"out={tmp_path}", "onnx=false")
    entry = pareto(runs, "M")[done.trial]
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "compression.json", "README.md", "nas_trial.json"} == names  # fmt: skip
    recipe = json.loads((tmp_path / "compression.json").read_text())
    assert recipe["compression"] == entry["compression"]
    assert recipe["recipe"]["format"].startswith("slm-nas-compression")
    card = (tmp_path / "README.md").read_text()
    assert f"trial {done.trial}" in card and "study `M`" in card
    assert f"{entry['metrics']['params']:,}" in card
    assert "uncalibrated" in card  # pixel8 ships without a device calibration
    assert "torch 2.13" in card and "seed 0" in card
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (0, 1)
    record = json.loads((tmp_path / "nas_trial.json").read_text())
    assert record["trial"] == done.trial and record["metrics"] == entry["metrics"]


def test_tokenizer_round_trips_text_and_matches_the_studys(runs: Path, tmp_path: Path) -> None:
    export(runs, "study.name=D", "trial=best:bpb", f"out={tmp_path}", "onnx=false")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    study_tokenizer = Tokenizer.from_file(str(runs / "D" / "tokenizer.json"))
    text = "def f(x):\n    return {'ünïcode': x ** 2}  # ✓ tabs\tand  spaces .\n"
    ids = tokenizer(text)["input_ids"]
    assert ids == study_tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id) == (0, 0, 1)
    assert len(tokenizer) == AutoConfig.from_pretrained(tmp_path).vocab_size


def test_pareto_writes_one_directory_per_member(runs: Path, tmp_path: Path) -> None:
    done = export(runs, "study.name=D", "trial=pareto", f"out={tmp_path}", "onnx=false")
    members = set(pareto(runs, "D"))
    assert {d.trial for d in done} == members
    assert {p.name for p in tmp_path.iterdir()} == {f"trial-{n}" for n in members}
    entries = pareto(runs, "D")
    for item in done:
        assert item.params == entries[item.trial]["metrics"]["params"]  # the deployed shape's
        config = AutoConfig.from_pretrained(item.path)
        assert sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()) == (
            config_params(entries[item.trial])
        )


def test_best_picks_the_extreme_of_one_metric(runs: Path, tmp_path: Path) -> None:
    trials = {n: e["metrics"] for n, e in pareto(runs, "D").items()}
    (low,) = export(runs, "study.name=D", "trial=best:memory_mb", f"out={tmp_path / 'a'}",
                    "onnx=false")  # fmt: skip
    assert trials[low.trial]["memory_mb"] == min(m["memory_mb"] for m in trials.values())
    (fast,) = export(runs, "study.name=D", "trial=best:tokens_per_s", f"out={tmp_path / 'b'}",
                     "onnx=false")  # fmt: skip
    assert trials[fast.trial]["tokens_per_s"] == max(m["tokens_per_s"] for m in trials.values())
    with pytest.raises(NasError, match=r"unknown metric 'speed'.*bpb"):
        export(runs, "study.name=D", "trial=best:speed", f"out={tmp_path / 'c'}")


def test_unknown_study_and_trial_list_what_exists(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(NasError, match=r"no study 'nope'.*D, I, M"):
        export(runs, "study.name=nope", "trial=0", f"out={tmp_path}")
    with pytest.raises(NasError, match=r"no trial 99 \(trials: 0-\d\).*within the device limits"):
        export(runs, "study.name=D", "trial=99", f"out={tmp_path}")
    with pytest.raises(NasError, match="not a trial number"):
        export(runs, "study.name=D", "trial=first", f"out={tmp_path}")
    with pytest.raises(NasError, match="pass trial=N"):
        export(runs, "study.name=D", f"out={tmp_path}")


def test_untrained_and_failed_trials_are_refused(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(NasError, match=r"trial 0 was never trained \(over the device limit"):
        export(runs, "study.name=I", "trial=0", f"out={tmp_path}")
    with pytest.raises(NasError, match="no Pareto front yet"):
        export(runs, "study.name=I", "trial=pareto", f"out={tmp_path}")
    study = optuna.load_study(study_name="I", storage=f"sqlite:///{runs}/I/study.db")
    failed = study.ask()
    failed.set_user_attr("fail_reason", "training loss became nan at step 3")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    with pytest.raises(NasError, match=f"trial {failed.number} did not finish .state FAIL.: "):
        export(runs, "study.name=I", f"trial={failed.number}", f"out={tmp_path}")


def test_non_empty_out_is_refused_unless_forced(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    args = ("study.name=D", "trial=best:bpb", f"out={tmp_path}", "onnx=false")
    with pytest.raises(NasError, match="exists and is not empty; pass force=true"):
        export(runs, *args)
    export(runs, *args, "force=true")
    assert (tmp_path / "config.json").is_file()
    assert (tmp_path / "notes.txt").read_text() == "keep me"  # force replaces only its own files


def test_cli_prints_one_line_and_exits_2(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [f"runs_dir={runs}", "study.name=D", "trial=99", f"out={tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: study 'D' has no trial 99") and "\n" not in err


@pytest.mark.slow
def test_exported_onnx_runs_in_onnx_runtime_dense_and_moe(runs: Path, tmp_path: Path) -> None:
    for study in ("D", "M"):
        (done,) = export(runs, f"study.name={study}", "trial=best:bpb", f"out={tmp_path / study}")
        check = json.loads((done.path / "nas_trial.json").read_text())["onnx_check"]
        assert check["max_abs_logit_diff"] < 1e-3  # export compared ORT with torch
        session = ort.InferenceSession(str(done.path / "model.onnx"))
        ids = np.array([[5, 6, 7], [8, 9, 10]], dtype=np.int64)
        (logits,) = session.run(["logits"], {"input_ids": ids})
        assert logits.shape == (2, 3, AutoConfig.from_pretrained(done.path).vocab_size)
        assert np.isfinite(logits).all()


def test_pareto_exports_exactly_pareto_json_s_members(
    tmp_path: Path, shared_cache: Path, tiny: list[str]
) -> None:
    """A repeated candidate reuses its twin's training (`cached_from`): same values, so it is
    non-dominated too, but pareto.json lists the original only, and so does export."""
    runs_dir = tmp_path / "runs"
    settings = load_settings(
        ["budget=smoke", f"runs_dir={runs_dir}", f"cache_dir={shared_cache}", "quiet=true",
         *tiny, "search_space.n_heads=[1]", "search_space.tie_embeddings=[true]",
         "search_space.weight_bits=[16]", "search_space.sparsity=[none]",
         "search_space.ffn_ratio=[2.0]", "sampler=random", "study.name=C", "study.n_trials=3"]
    )  # fmt: skip
    run_search(settings)  # a space of one candidate: trials 1 and 2 reuse trial 0
    study = optuna.load_study(study_name="C", storage=settings.study.storage)
    # trial 0 stayed at rung 0 alone; once the run's trials were spent it went on as trial 3
    assert [t.user_attrs.get("cached_from") for t in study.trials] == [None, 0, 0, None]
    assert study.trials[3].user_attrs["continues"] == 0
    assert len(study.best_trials) == 4  # equal values: Optuna's front holds all four
    done = export(runs_dir, "study.name=C", "trial=pareto", "onnx=false", f"out={tmp_path / 'f'}")
    assert sorted(d.trial for d in done) == sorted(pareto(runs_dir, "C")) == [3]
