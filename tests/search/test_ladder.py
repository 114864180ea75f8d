"""The ladder in a real search: rungs, promotion, paired seeds, what the front judges, and rung
bookkeeping across a retry."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas import records
from nas.config.compose import load_settings
from nas.search.run import run_search

TINY_VARIED = ["search_space.n_layers=[1,2]", "search_space.n_experts=[1]"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    runs = tmp_path_factory.mktemp("ladder") / "runs"
    settings = load_settings(
        ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
         *TINY_VARIED, "study.name=L", "study.n_trials=8"]
    )  # fmt: skip
    run_search(settings)
    return runs


def _trials(runs: Path, name: str = "L") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{runs}/{name}/study.db")
    return study.get_trials(deepcopy=False)


def test_every_candidate_has_rung_0_and_its_value_is_rung_0s(study_dir: Path) -> None:
    for t in _trials(study_dir):
        r = records.read(t)
        assert r.trained and r.rungs[0]["rung"] == 0 and r.rungs[0]["steps"] == 6
        assert t.values[0] == pytest.approx(r.rungs[0]["bpb_seeds"][0])  # samplers see rung 0
        assert [e["rung"] for e in r.rungs] == list(range(len(r.rungs)))
        assert r.final == (r.rungs[-1]["rung"] == 1) and r.promotion


def test_the_top_rung_has_paired_seeds_and_its_mean_is_the_quality(study_dir: Path) -> None:
    finals = [records.read(t) for t in _trials(study_dir) if records.counts(t)]
    assert finals  # someone was promoted
    for t in _trials(study_dir):  # each verdict follows its recorded rank: top floor(n/eta), eta 2
        r = records.read(t)
        rank, of = map(int, re.search(r"rank (\d+) of (\d+)", r.promotion).groups())
        assert r.final == (rank - 1 < of // 2), r.promotion
    for r in finals:
        top = r.rungs[-1]
        assert top["seeds"] == [0, 1] and top["steps"] == 12
        assert r.metrics["bpb"] == pytest.approx(sum(top["bpb_seeds"]) / 2)
        assert r.metrics["seeds"] == 2 and r.metrics["bpb_sd"] >= 0
        assert "compression_delta_sd" in r.metrics


def test_the_front_never_mixes_rungs(study_dir: Path) -> None:
    front = json.loads((study_dir / "L" / "pareto.json").read_text())
    assert front["pareto"] and all(e["rung"] == 1 for e in front["pareto"])
    assert all(e["quality"]["basis"] == "rung 1, 2 seed(s)" for e in front["pareto"])
    finals = {t.number for t in _trials(study_dir) if records.counts(t)}
    assert {e["trial"] for e in front["pareto"]} <= finals
    assert front["fidelity"]["rung_steps"] == [6, 12]


def test_a_target_beyond_the_top_rung_rejudges_the_front_on_resume(
    study_dir: Path, tmp_path: Path, shared_cache: Path
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(study_dir / "L", runs / "L")
    top = {e["trial"]: e["quality"]["bpb"] for e in _front(study_dir)}
    tokens = 64 * 6 * 4 * 32  # 64 x rung 0 (6 steps of 4 x 32 tokens)
    for how, basis in [("late_slope", "(late-slope prior)"), ("curve", "tokens")]:
        settings = load_settings(
            ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
             *TINY_VARIED, "study.name=L", "study.n_trials=0", f"target.tokens={tokens}",
             f"target.extrapolation={how}"]
        )  # fmt: skip
        run_search(settings)
        front = _front(runs)
        assert front and all(e["quality"]["basis"].endswith(basis) for e in front), how
        if how == "late_slope":  # the prior's own error (the curve's needs 3 rungs; smoke has 2)
            assert all(e["quality"]["sd"] > 0 for e in front)
            read_on = {e["trial"]: e["quality"]["bpb"] for e in front}
            assert all(read_on[t] < top[t] for t in top if t in read_on)  # still falling


def _front(runs: Path) -> list[dict]:
    return json.loads((runs / "L" / "pareto.json").read_text())["pareto"]


def test_promotions_were_in_the_top_share_of_their_rung(study_dir: Path) -> None:
    for t in _trials(study_dir):
        why = records.read(t).promotion or ""
        if why.startswith("promoted"):
            rank, of = (int(x) for x in why.split("rank ")[1].split(" (")[0].split(" of "))
            assert rank - 1 < of // 2


def test_a_candidate_that_stayed_goes_on_later_carrying_its_rungs(study_dir: Path) -> None:
    trials = _trials(study_dir)
    assert records.read(trials[0]).promotion.startswith("stayed at rung 0: rank 1 of 1")
    continuations = [t for t in trials if records.continues(t) is not None]
    assert continuations  # this study's first candidate, alone when it finished, goes on later
    for t in continuations:
        origin = trials[records.continues(t)]
        carried = records.read(origin).rungs
        assert t.params == origin.params and records.read(t).rungs[: len(carried)] == carried
        assert "later, continuing trial" in records.read(t).promotion
    assert len({records.continues(t) for t in continuations}) == len(continuations)  # once each
    front = {e["trial"] for e in _front(study_dir)}
    assert not front & {records.continues(t) for t in continuations}


def test_a_second_copy_of_a_late_promotion_stands_down(
    study_dir: Path, tmp_path: Path, shared_cache: Path
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(study_dir / "L", runs / "L")
    study = optuna.load_study(study_name="L", storage=f"sqlite:///{runs}/L/study.db")
    done = next(t for t in study.get_trials() if records.continues(t) is not None)
    study.enqueue_trial(done.params, user_attrs={k: done.user_attrs[k] for k in ("continues",)})
    settings = load_settings(
        ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
         *TINY_VARIED, "study.name=L", "study.n_trials=1"]
    )  # fmt: skip
    run_search(settings)
    copy = _trials(runs)[len(_trials(study_dir))]  # the queued copy runs first
    assert copy.state == optuna.trial.TrialState.PRUNED and records.continues(copy) is not None
    assert records.read(copy).promotion.startswith(f"stood down: trial {done.number} continues")


def test_no_promotion_runs_past_the_timeout(
    tmp_path: Path, shared_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nas.search.ladder as ladder

    monkeypatch.setattr(ladder, "GRACE_S", -1e9)  # as if the study's time were long spent
    settings = load_settings(
        ["budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}", "quiet=true",
         *TINY_VARIED, "study.name=T", "study.n_trials=3"]
    )  # fmt: skip
    run_search(settings)
    for t in _trials(tmp_path, "T"):
        r = records.read(t)
        assert len(r.rungs) == 1 and "not enough time" in r.promotion


KILL_AT_PROMOTION = """
import os, signal, sys
import nas.search.ladder as ladder
from nas.config.compose import load_settings
from nas.search.run import run_search
def die(self, rung, run):
    os.kill(os.getpid(), signal.SIGKILL)
ladder.Ladder._promotion = die
run_search(load_settings(sys.argv[1:]))
"""


def test_a_killed_promotion_is_retried_and_no_finished_rung_is_lost(
    tmp_path: Path, shared_cache: Path
) -> None:
    args = ["budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}", "quiet=true",
            *TINY_VARIED, "study.name=K", "study.n_trials=1"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", KILL_AT_PROMOTION, *args], check=False)
    assert done.returncode == -signal.SIGKILL
    (dead,) = _trials(tmp_path, "K")
    assert dead.state == optuna.trial.TrialState.RUNNING
    kept = records.read(dead).rungs
    assert [e["rung"] for e in kept] == [0]  # rung 0 finished before the kill
    run_search(load_settings([*args[:-1], "study.n_trials=0"]))  # the resume re-queues it
    run_search(load_settings(args))
    failed, retried = _trials(tmp_path, "K")
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retried.state == optuna.trial.TrialState.COMPLETE
    assert retried.system_attrs["failed_trial"] == dead.number
    again = records.read(retried)
    assert again.rungs[0] == kept[0]  # the very record (its timing too): reused, not re-measured
    # judged again at its rung, alone; as the run's last trial no peer will follow it, so the
    # share is rounded up and it goes on
    assert again.final and len(again.rungs) == 2 and "ceil(1/2)" in again.promotion


@pytest.mark.slow
def test_two_workers_promote_without_duplicates(tmp_path: Path, shared_cache: Path) -> None:
    journal = f"journal:///{tmp_path / 'w.journal'}"
    settings = load_settings(
        ["budget=smoke", f"runs_dir={tmp_path}", f"cache_dir={shared_cache}", "quiet=true",
         *TINY_VARIED, "study.name=W", "study.n_trials=8", "study.workers=2",
         f"study.storage={journal}"]
    )  # fmt: skip
    run_search(settings)
    from nas.study.storage import open_storage

    study = optuna.load_study(study_name="W", storage=open_storage(journal))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    stood_down = [t for t in trials if "stood down" in (records.read(t).promotion or "")]
    assert len(done) >= 8 and len(done) + len(stood_down) == len(trials)
    origins = [records.continues(t) for t in done if records.continues(t) is not None]
    assert len(origins) == len(set(origins))  # each late promotion ran once
    trials = done
    # two workers; late promotions after the last trial run in workers started for them
    assert len({r["pid"] for r in (records.worker(t) for t in trials)}) >= 2
    for t in trials:
        rungs = [e["rung"] for e in records.read(t).rungs]
        assert rungs == sorted(set(rungs))  # each rung measured once per candidate
    assert os.path.exists(tmp_path / "W" / "pareto.json")
