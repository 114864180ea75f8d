"""`python -m nas.report`: report.html and pareto.png for real smoke studies, alone and overlaid,
and the page as a browser renders it (headless Chromium, skipped where it is not installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from nas.config.compose import load_settings
from nas.errors import NasError
from nas.report.__main__ import main as report_main
from nas.report.data import StudyData, collect
from nas.report.png import draw
from nas.search.run import run_search
from nas.study.lookup import StudyRef, load

# pixel8 with a decode limit inside the smoke models' range (~0.33-0.40 ms/token), so that some
# candidates are over it: the report must show both kinds. Random sampling, because the default
# cost-aware sampler never proposes a candidate over a limit.
TIGHT = ["hardware.deploy.min_tokens_per_s=2800", "sampler=random"]
PLOT_DIVS = ("pareto-decode", "pareto-memory", "hypervolume", "architectures")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    runs_dir = tmp_path_factory.mktemp("runs")
    common = ["budget=smoke", f"runs_dir={runs_dir}", f"cache_dir={shared_cache}", "quiet=true"]
    run_search(
        load_settings([*common, "hardware=pixel8", *TIGHT, "study.name=A", "study.n_trials=7"])
    )
    run_search(load_settings([*common, "hardware=rpi5", "study.name=B", "study.n_trials=3"]))
    return runs_dir


def study_data(runs: Path, name: str) -> StudyData:
    cfg = load_settings(["budget=smoke", f"runs_dir={runs}", f"study.name={name}"])
    ref = StudyRef(name, str(cfg.study.storage), runs, cfg)
    return collect(load(ref), ref)


def test_report_of_one_study_has_front_limits_table_and_export_commands(runs: Path) -> None:
    assert report_main(["budget=smoke", f"runs_dir={runs}", "study.name=A"]) == 0
    page = (runs / "A" / "report.html").read_text()
    assert (runs / "A" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Self-contained: plotly's code is inline, nothing is fetched.
    assert "Plotly" in page and not re.search(r"<script[^>]+src=", page)
    for div in PLOT_DIVS:
        assert f'id="{div}"' in page
    front = json.loads((runs / "A" / "pareto.json").read_text())["pareto"]
    assert front
    assert page.count("<tr><td>A</td>") == len(front)
    for entry in front:
        assert f"study.name=A runs_dir={runs} trial={entry['trial']} out=" in page
    limit = 1000 / 2800
    assert f"pixel8 limit {limit:.4g} ms" in page  # (plotly's JSON escapes the "/" of ms/token)
    assert "pixel8 limit 2048 MB" in page
    assert "latency uncalibrated prior" in page
    assert "A: over a limit, untrained" in page


def test_study_data_separates_front_feasible_and_over_limit(runs: Path) -> None:
    data = study_data(runs, "A")
    over = [p for p in data.points if not p.feasible]
    front = [p for p in data.points if p.pareto]
    assert over and front, "the tight limit should leave trials on both sides"
    assert all(not p.trained for p in over)
    assert all(p.decode_ms <= data.limits["max_decode_ms"] for p in front)
    trained = [p for p in data.points if p.trained and p.feasible]
    for p in front:
        assert p.trained and p.feasible
        mine = (p.bpb, p.decode_ms, p.memory_mb)
        for q in trained:
            theirs = (q.bpb, q.decode_ms, q.memory_mb)
            dominates = theirs != mine and all(a <= b for a, b in zip(theirs, mine, strict=True))
            assert not dominates, f"#{q.trial} dominates front member #{p.trial}"
    assert data.reference is not None and data.reference.decode_ms == pytest.approx(1000 / 2800)
    assert 0 < data.hypervolume < 1
    history = [v for _, v in data.hv_history]
    assert history == sorted(history), "hypervolume never shrinks"


def test_pareto_png_draws_the_front_and_the_device_limits(runs: Path) -> None:
    data = study_data(runs, "A")
    fig = draw([data])
    decode_ax, memory_ax = fig.axes[:2]
    for ax, limit in (
        (decode_ax, data.limits["max_decode_ms"]),
        (memory_ax, data.limits["max_memory_mb"]),
    ):
        verticals = [line.get_xdata() for line in ax.get_lines()]
        assert any(list(x) == [limit, limit] for x in verticals), "device limit not drawn"
        plotted = [tuple(xy) for coll in ax.collections for xy in coll.get_offsets().tolist()]
        for p in data.points:
            x = p.decode_ms if ax is decode_ax else p.memory_mb
            assert (x, p.bpb) in plotted, f"trial {p.trial} missing"


def test_two_studies_are_overlaid(runs: Path) -> None:
    assert report_main(["budget=smoke", f"runs_dir={runs}", "study.name=[A,B]"]) == 0
    out = runs / "compare-A-B"
    page = (out / "report.html").read_text()
    assert (out / "pareto.png").is_file()
    assert "pixel8 limit" in page and "rpi5 limit" in page
    assert "A: front" in page and "B: front" in page
    assert "<tr><td>B</td>" in page


def test_unknown_study_names_the_ones_that_exist(runs: Path) -> None:
    with pytest.raises(NasError) as err:
        report_main(["budget=smoke", f"runs_dir={runs}", "study.name=nope"])
    message = str(err.value)
    assert "\n" not in message
    assert "'nope'" in message and "A, B" in message
    assert not (runs / "nope").exists(), "looking a study up must not create it"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_headless_chromium_renders_every_plot_without_script_errors(runs: Path) -> None:
    report_main(["budget=smoke", f"runs_dir={runs}", "study.name=A"])
    page = runs / "A" / "report.html"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--enable-unsafe-swiftshader", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
                "--window-size=1400,2400", "--dump-dom", page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if re.search(r"Uncaught|Error|is not defined", line)]
    errors = [line for line in errors if "WebGL" not in line]  # software-GL notices, not ours
    assert not errors, errors
    for div in PLOT_DIVS:
        # Plotly replaces each empty div with its rendered SVG/WebGL tree.
        start = dom.index(f'id="{div}"')
        assert "main-svg" in dom[start : start + 20000], f"{div} was not drawn"
    assert 'id="front-table"' in dom and "python -m nas.export" in dom
