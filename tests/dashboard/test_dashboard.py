"""A search's study opens in optuna-dashboard, served on localhost, with its trial user attrs
(arch, compression, metrics, learning curve) readable whole."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna_dashboard import wsgi

from nas.config.compose import load_settings
from nas.dashboard.__main__ import main as dashboard_main
from nas.errors import NasError
from nas.search.run import run_search

READABLE = ("arch", "compression", "metrics", "learning_curve", "trained")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass


@dataclass(frozen=True)
class Searched:
    runs: Path
    storage: str
    study: optuna.Study


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Searched:
    runs = tmp_path_factory.mktemp("runs")
    common = ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true"]
    cfg = load_settings([*common, "study.name=D", "study.n_trials=3"])
    run_search(cfg)
    storage = str(cfg.study.storage)
    return Searched(runs, storage, optuna.load_study(study_name="D", storage=storage))


@pytest.fixture
def server(searched: Searched) -> Iterator[str]:
    """optuna-dashboard's own WSGI app on 127.0.0.1 (a free port), stopped after the test."""
    httpd = make_server("127.0.0.1", 0, wsgi(searched.storage), handler_class=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def decoded(shown: str, original: Any) -> Any:
    """The dashboard shows numbers and booleans with `str`, everything else as JSON cut at 1,024
    characters: a cut value fails to parse, so ours must stay shorter."""
    if isinstance(original, (bool, int, float)):
        return type(original)(shown == "True") if isinstance(original, bool) else float(shown)
    return shown if isinstance(original, str) else json.loads(shown)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def test_study_and_trial_user_attrs_are_readable_in_the_dashboard(
    searched: Searched, server: str
) -> None:
    study = searched.study
    status, body = get(f"{server}/api/studies")
    assert status == 200
    listed = {s["study_name"]: s["study_id"] for s in json.loads(body)["study_summaries"]}
    assert "D" in listed

    status, body = get(f"{server}/api/studies/{listed['D']}")
    detail = json.loads(body)
    trials = {t["number"]: t for t in detail["trials"]}
    assert len(trials) == len(study.trials) == 3
    for trial in study.trials:
        shown = {a["key"]: a["value"] for a in trials[trial.number]["user_attrs"]}
        for key in READABLE:
            assert decoded(shown[key], trial.user_attrs[key]) == trial.user_attrs[key], key
    assert detail["objective_names"] == ["bpb", "decode_ms", "memory_mb"]

    status, page = get(f"{server}/dashboard")
    assert status == 200 and "<html" in page.lower()


def test_dashboard_command_refuses_an_unknown_study(searched: Searched) -> None:
    with pytest.raises(NasError, match=r"no study 'nope' .* it holds: D"):
        dashboard_main(["budget=smoke", f"runs_dir={searched.runs}", "study.name=nope"])
