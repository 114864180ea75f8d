"""`pareto.png`: the front(s) as a static figure for papers and READMEs (matplotlib, headless).

Two panels, quality against decode latency and against memory, on log axes so the device limit
and the candidates (often far below it) are both visible. Filled markers are the Pareto front,
faint ones the other trained trials, crosses the candidates over a device limit (never trained:
their bits per byte is the uniform model's). Circles are uncompressed (fp16, dense) models,
diamonds compressed ones. One colour per study.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no display and no global state needed
from matplotlib.lines import Line2D

from nas.errors import NasError
from nas.report.data import Point, StudyData

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
PANELS = (
    ("decode_ms", "max_decode_ms", "decode latency (ms/token, log)", "ms/token"),
    ("memory_mb", "max_memory_mb", "memory (MB, log)", "MB"),
)


def color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def title(studies: list[StudyData]) -> str:
    if len(studies) == 1:
        s = studies[0]
        return f"Pareto front of {s.name} on {s.hardware} ({latency_word(s)})"
    return "Pareto fronts: " + ", ".join(f"{s.name} ({s.hardware})" for s in studies)


def latency_word(study: StudyData) -> str:
    if study.calibrated is None:
        return "latency calibration not recorded"
    return "latency calibrated on the device" if study.calibrated else "latency uncalibrated prior"


def x_range(studies: list[StudyData], metric: str, limit_key: str) -> tuple[float, float]:
    """A log axis' span holding every point and every device limit, with a margin."""
    values = [getattr(p, metric) for s in studies for p in s.points if getattr(p, metric) > 0]
    values += [s.limits[limit_key] for s in studies if s.limits.get(limit_key)]
    if not values:
        return 0.1, 10.0
    return min(values) / 1.4, max(values) * 1.4


def text_right_of(limit: float, span: tuple[float, float]) -> bool:
    """Label a limit line on its right when it stands in the left half of a log axis."""
    lo, hi = (math.log10(v) for v in span)
    return (math.log10(limit) - lo) < (hi - lo) / 2


def write_png(studies: list[StudyData], path: Path) -> Path:
    """Draw both panels for every study into `path`."""
    fig = draw(studies)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as err:
        raise NasError(f"cannot write {path}: {err.strerror}; pick out=DIR") from None
    return path


def draw(studies: list[StudyData]) -> Figure:
    """The figure: quality vs decode latency (left) and vs memory (right), limits dashed."""
    fig = Figure(figsize=(12, 4.8), dpi=150)
    axes = fig.subplots(1, 2)
    for ax, (metric, limit_key, xlabel, unit) in zip(axes, PANELS, strict=True):
        span = x_range(studies, metric, limit_key)
        for i, study in enumerate(studies):
            _scatter(ax, study, metric, color(i))
            limit = study.limits.get(limit_key)
            if limit:
                right = text_right_of(limit, span)
                ax.axvline(limit, color=color(i), linestyle="--", linewidth=1.2)
                ax.annotate(
                    f"{study.hardware} limit {limit:.4g} {unit}",
                    xy=(limit, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(4 if right else -4, -4 - 12 * i),
                    textcoords="offset points",
                    ha="left" if right else "right",
                    va="top",
                    fontsize=8,
                    color=color(i),
                )
        ax.set_xscale("log")
        ax.set_xlim(*span)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out bits per byte (lower is better)")
        ax.grid(True, which="both", alpha=0.25)
    fig.suptitle(title(studies), fontsize=11)
    handles = _legend(studies)
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=min(len(handles), 5))
    rows = -(-len(handles) // 5)  # the legend's rows, below the panels
    fig.tight_layout(rect=(0, 0.04 + 0.045 * rows, 1, 1))
    return fig


def _scatter(ax: Axes, study: StudyData, metric: str, tint: str) -> None:
    groups: dict[str, list[Point]] = {"front": [], "other": [], "over": []}
    for p in study.points:
        groups["front" if p.pareto else "other" if p.trained else "over"].append(p)
    for compressed, marker in ((False, "o"), (True, "D")):
        other = [p for p in groups["other"] if p.compressed == compressed]
        ax.scatter(
            [getattr(p, metric) for p in other],
            [p.bpb for p in other],
            marker=marker,
            s=22,
            color=tint,
            alpha=0.3,
            linewidths=0,
        )
        front = [p for p in groups["front"] if p.compressed == compressed]
        ax.errorbar(  # the seed spread (or the extrapolation's) of each member's quality
            [getattr(p, metric) for p in front],
            [p.bpb for p in front],
            yerr=[p.sd for p in front],
            fmt="none",
            ecolor=tint,
            elinewidth=1,
            capsize=2,
            zorder=2,
        )
        ax.scatter(
            [getattr(p, metric) for p in front],
            [p.bpb for p in front],
            marker=marker,
            s=60,
            color=tint,
            edgecolors="black",
            linewidths=0.8,
            zorder=3,
        )
    over = groups["over"]
    ax.scatter(
        [getattr(p, metric) for p in over],
        [p.bpb for p in over],
        marker="x",
        s=22,
        color=tint,
        alpha=0.45,
    )
    labels: dict[tuple[float, float], list[str]] = {}  # identical candidates share one label
    for p in groups["front"]:
        labels.setdefault((getattr(p, metric), p.bpb), []).append(f"#{p.trial}")
    for xy, names in labels.items():
        ax.annotate(" ".join(names), xy, xytext=(4, 3), textcoords="offset points", fontsize=7)


def _legend(studies: list[StudyData]) -> list[Line2D]:
    handles = [
        Line2D([], [], marker="s", linestyle="", color=color(i), label=f"{s.name} ({s.hardware})")
        for i, s in enumerate(studies)
    ]
    grey = "#555555"
    handles += [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=grey,
            markeredgecolor="black",
            label="Pareto front (filled, outlined)",
        ),
        Line2D([], [], marker="o", linestyle="", color=grey, alpha=0.3, label="other trained"),
        Line2D([], [], marker="x", linestyle="", color=grey, label="over a limit (untrained)"),
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color="white",
            markeredgecolor=grey,
            label="circle: fp16, dense",
        ),
        Line2D(
            [],
            [],
            marker="D",
            linestyle="",
            color="white",
            markeredgecolor=grey,
            label="diamond: quantised or sparse",
        ),
        Line2D([], [], linestyle="--", color=grey, label="device limit"),
    ]
    return handles
