"""The late-slope prior: its fit, the shipped rows, and the judge reading top rungs on with it."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from nas import records
from nas.arch import ArchConfig
from nas.fidelity import late_slope
from nas.fidelity.judge import judge
from nas.fidelity.late_slope import Row, fit


def _rows(coef: tuple[float, float, float], noise: float = 0.0) -> list[Row]:
    out = []
    shapes = [(layers, d) for layers in (1, 2, 4) for d in (64, 128, 256)]
    for i, (layers, d) in enumerate(shapes):
        rate = coef[0] + coef[1] * math.log(layers) + coef[2] * math.log(d) + noise * (-1) ** i
        out.append(Row(f"a{i}", layers, d, 540, 2.2, 3840, 2.2 - rate * math.log(3840 / 540)))
    return out


COEF = (-0.2, 0.05, 0.07)


def test_the_rate_is_recovered_and_read_on_in_log_tokens() -> None:
    prior = fit(_rows(COEF))
    assert prior.coef == pytest.approx(COEF, abs=1e-9)
    assert prior.rate_sd == pytest.approx(0.0, abs=1e-9)  # a noise-free rate predicts each row
    rate = COEF[0] + COEF[1] * math.log(3) + COEF[2] * math.log(96)
    assert prior.at(2.0, 3, 96, 1e3, 1e3 * math.e) == pytest.approx(2.0 - rate)
    assert prior.at(2.0, 3, 96, 1e3, 1e3) == 2.0  # at the top rung, the top rung
    assert prior.beyond(1e3, 7e3) is None and "measured to 7.1x" in prior.beyond(1e3, 1e6)
    assert fit(_rows(COEF, noise=0.01)).rate_sd > 0.01  # leave-one-out, not in-sample
    rows = _rows(COEF)
    assert late_slope.leave_one_out(rows) == pytest.approx([r.long_bpb for r in rows])
    with pytest.raises(ValueError, match="two depths and two widths"):
        fit([r for r in rows if r.d_model == 64])


def test_the_shipped_rows_say_deeper_and_wider_models_keep_falling_faster() -> None:
    rows = late_slope.read_rows()
    assert len(rows) >= 24 and all(r.long_steps > r.top_steps for r in rows)
    prior = late_slope.prior()
    assert prior.coef[1] > 0 and prior.coef[2] > 0 and prior.rate(1, 64) > 0
    assert math.isfinite(prior.rate_sd)
    held_out = late_slope.prior(leave_out=(rows[0].arch,))
    assert held_out.rows == prior.rows - 1


def test_rows_of_the_bench_form_are_read(tmp_path: Path) -> None:
    text = (
        "rows:\n"
        '  - {"arch": "x", "layers": 1, "d_model": 64, "n": 1000, "top_steps": 10, "top_bpb":'
        ' [3.0, 3.2], "long_steps": 100, "long_bpb": [2.0, 2.2]}\n'
        "  - {arch: y, layers: 2, d_model: 64, top_steps: 10, top_bpb: 3.0, long_steps: 100,"
        " long_bpb: [1.9]}\n"
    )
    (tmp_path / "rows.yaml").write_text(text)
    x, y = late_slope.read_rows(tmp_path / "rows.yaml")
    assert (x.top_bpb, x.long_bpb, y.long_bpb) == pytest.approx((3.1, 2.1, 1.9))
    assert x.rate == pytest.approx(1.0 / math.log(10))


def _final(study: optuna.Study, bpb: float, layers: int, d_model: int, decode: float):
    trial = study.ask()
    rungs = [
        {"rung": 0, "tokens": 1e3, "bpb": bpb + 0.5, "bpb_seeds": [bpb + 0.5]},
        {"rung": 1, "tokens": 3e3, "bpb": bpb, "bpb_seeds": [bpb - 0.01, bpb + 0.01]},
    ]
    metrics = {"bpb": bpb, "bpb_sd": 0.014, "decode_ms": decode, "memory_mb": 10.0}
    arch = ArchConfig(layers, d_model // 16, d_model // 16, 16, 4 * d_model, 512).to_dict()
    records._write(trial, {"trained": True, "final": True, "rungs": rungs, "metrics": metrics,
                           "arch": arch}, {"memory_excess_mb": -1.0})  # fmt: skip
    study.tell(trial, [bpb, decode, 10.0])
    return study.get_trials()[-1]


def test_the_judge_reads_every_top_rung_on_with_the_prior() -> None:
    study = optuna.create_study(directions=["minimize"] * 3)
    small = _final(study, 4.00, 1, 64, 1.0)
    large = _final(study, 4.05, 4, 256, 2.0)  # behind at the top rung
    target = {"tokens": 3e3 * 64, "extrapolation": "late_slope"}
    judged = judge([small, large], target)
    prior = late_slope.prior()
    assert [j.quality for j in judged] == pytest.approx(
        [prior.at(4.00, 1, 64, 3e3, 3e3 * 64), prior.at(4.05, 4, 256, 3e3, 3e3 * 64)]
    )
    assert judged[1].quality < judged[0].quality  # the larger keeps falling faster and passes
    assert all("late-slope prior" in j.basis for j in judged)
    assert judged[0].sd == pytest.approx(math.hypot(prior.sd(3e3, 3e3 * 64), 0.014))
    # Studies stored before the prior keep being judged on their own curves.
    curve = judge([small, large], {"tokens": 3e3 * 64})
    assert all(j.basis == f"extrapolated to {3e3 * 64:,.0f} tokens" for j in curve)
    # At the top rung nothing is extrapolated.
    assert [j.quality for j in judge([small, large], {**target, "tokens": 3e3})] == [4.0, 4.05]
