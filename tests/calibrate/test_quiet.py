"""The measurement protocol's quiet check (nas.onnx.quiet) and the repeatability figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.calibrate.__main__ import main
from nas.calibrate.repeatability import repeatability, repeats
from nas.errors import NasError
from nas.onnx.quiet import MemoryProbe, Quiet, memory_noise, round_slowdowns

# /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice
STAT = "cpu  {user} 0 100 {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4\n"


def _proc(where: Path, *, load: float, user: int = 1000, idle: int = 9000, steal: int = 0) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "loadavg").write_text(f"{load} 0.5 0.4 1/200 12345\n")
    (where / "stat").write_text(STAT.format(user=user, idle=idle, steal=steal))
    return where


def test_a_busy_machine_is_noisy_and_an_idle_one_quiet(tmp_path: Path) -> None:
    idle = Quiet.now(_proc(tmp_path / "idle", load=0.1))
    busy = Quiet.now(_proc(tmp_path / "busy", load=6.0))
    cores = idle.cpus
    assert idle.noise(threads=1) == "" or cores == 1
    assert "load average 6.00" in busy.noise(threads=cores)
    # During a run the run's own threads are in the load average and do not count against it.
    running = Quiet.now(_proc(tmp_path / "running", load=float(cores)))
    assert running.noise(threads=cores, own_load=cores) == ""


def test_steal_time_over_the_interval_is_noise(tmp_path: Path) -> None:
    before = Quiet.now(_proc(tmp_path / "a", load=0.0, user=1000, idle=9000, steal=0))
    after = Quiet.now(_proc(tmp_path / "b", load=0.0, user=1500, idle=9300, steal=200))
    assert after.steal_share_since(before) == pytest.approx(200 / 1000)
    assert "steal time 20%" in after.noise(threads=1, earlier=before)


def test_calibration_refuses_a_noisy_machine_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _proc(tmp_path / "proc", load=50.0)  # simulated load: 50 runnable processes
    monkeypatch.setattr("nas.onnx.quiet.PROC", loaded)
    runs = tmp_path / "runs"
    with pytest.raises(NasError, match=r"not quiet enough to time on: load average 50\.00"):
        main(["hardware=local_cpu", "quiet=refuse", f"runs_dir={runs}", "n_fit=6",
              "n_heldout=0", f"calibration={tmp_path / 'c.json'}"])  # fmt: skip
    assert not (tmp_path / "c.json").exists()
    assert not (runs / "calibration").exists() and not (runs / ".cache").exists()


def test_repeatability_counts_graphs_whose_rounds_agree() -> None:
    rows = [
        {"id": "a", "decode_rounds_ms": [1.0, 1.02, 0.99], "round_noise": ["", "load", ""]},
        {"id": "b", "decode_rounds_ms": [1.0, 1.08, 0.97]},
        {"id": "c", "decode_rounds_ms": [1.0, 1.5, 1.0]},
        {"id": "d"},  # a device's single figure: no rounds
    ]
    assert repeats(rows[0], "decode_ms", 0.05) and repeats(rows[3], "decode_ms", 0.05) is None
    rep = repeatability(rows)
    assert rep["decode_ms"]["graphs"] == 3
    assert rep["decode_ms"]["within_5pct"] == pytest.approx(1 / 3)
    assert rep["decode_ms"]["within_10pct"] == pytest.approx(2 / 3)
    assert rep["decode_ms"]["not_repeating"] == ["c"]
    assert rep["noisy_rounds"] == [2]


def test_a_round_whose_memory_probes_ran_slow_is_noisy() -> None:
    assert memory_noise(1.02) == "" and memory_noise(1.10) == ""
    assert "memory bandwidth 25% below" in memory_noise(1.25)


def test_rounds_are_judged_against_the_quietest_round_not_one_lucky_probe() -> None:
    """One probe far faster than the rest (a copy that found the memory idle) flags nothing:
    only a round whose probes ran slower as a whole than another round's is noisy."""
    steady = [10.0, 12.0, 11.0, 13.0, 12.0]
    lucky = [7.0, *steady[1:]]  # the run's fastest probe, 40% below the rounds' medians
    slowed = [ms * 1.25 for ms in steady]
    slowdowns = round_slowdowns([lucky, steady, slowed])
    assert slowdowns == pytest.approx([1.0, 1.0, 1.25])
    assert [bool(memory_noise(s)) for s in slowdowns] == [False, False, True]


def test_the_memory_probe_times_a_real_copy() -> None:
    probe = MemoryProbe(megabytes=8, reps=2)
    first, second = probe(), probe()
    assert 0.0 < first < 1000.0 and 0.0 < second < 1000.0


def test_the_fitted_statistic_is_what_the_repeatability_judges() -> None:
    """target=p10 fits each graph's fastest round by its 10th-percentile run and judges the
    rounds' p10s for repeatability; target=best the fastest round's median; a device's single
    figure is left as it is."""
    from nas.calibrate.run import with_target

    row = {
        "id": "a",
        "decode_ms": 1.2,
        "decode_rounds_ms": [1.0, 1.4, 1.2],  # medians: 40% apart
        "decode_best_ms": 1.0,
        "decode_p10_rounds_ms": [0.95, 0.97, 0.96],  # the rounds' fastest runs agree
    }
    device = {"id": "b", "decode_ms": 2.0}
    p10, single = with_target([row, device], "p10")
    assert p10["decode_ms"] == 0.95 and p10["decode_median_ms"] == 1.2
    assert p10["decode_median_rounds_ms"] == [1.0, 1.4, 1.2]
    assert repeats(p10, "decode_ms", 0.05) and not repeats(row, "decode_ms", 0.10)
    assert single == device
    best = with_target([row], "best")[0]
    assert best["decode_ms"] == 1.0 and best["decode_rounds_ms"] == [1.0, 1.4, 1.2]
    assert with_target([row], "median")[0] == row
