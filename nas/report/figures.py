"""The report's interactive figures (plotly), one function per figure.

Markers follow `nas.report.png`: one colour per study, filled and outlined = Pareto front, faint =
other trained trials, crosses = over a device limit (untrained); circles uncompressed, diamonds
compressed. Latency and memory axes are logarithmic so the device limits fit beside the points.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from nas.report.data import Point, StudyData
from nas.report.png import PANELS, color, text_right_of, x_range

LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}
PARCOORD_DIMS = (
    ("n_layers", "layers", lambda e: e["arch"]["n_layers"]),
    ("d_model", "d_model", lambda e: e["arch"]["d_model"]),
    ("n_heads", "heads", lambda e: e["arch"]["n_heads"]),
    ("n_kv_heads", "kv heads", lambda e: e["arch"]["n_kv_heads"]),
    ("ffn_dim", "ffn", lambda e: e["arch"]["ffn_dim"]),
    ("n_experts", "experts", lambda e: e["arch"]["n_experts"]),
    ("weight_bits", "weight bits", lambda e: e["compression"]["weight_bits"]),
    ("sparsity", "sparsity", lambda e: e["compression"]["sparsity"]),
    ("params", "params (M)", lambda e: e["metrics"]["params"] / 1e6),
    ("bpb", "bits/byte", lambda e: e["metrics"]["bpb"]),
    ("decode_ms", "decode ms", lambda e: e["metrics"]["decode_ms"]),
    ("memory_mb", "memory MB", lambda e: e["metrics"]["memory_mb"]),
)


def _hover(study: StudyData, p: Point) -> str:
    state = "Pareto front" if p.pareto else "trained" if p.trained else "over a limit, untrained"
    return (
        f"{study.name} #{p.trial} ({state}, rung {p.rung})<br>{p.label}<br>bpb {p.bpb:.4f}"
        + (f" ± {p.sd:.4f}" if p.sd else "")
        + f" · decode {p.decode_ms:.3g} ms · memory {p.memory_mb:.4g} MB"
    )


def pareto_figure(studies: list[StudyData], panel: int) -> go.Figure:
    """Bits per byte against decode latency (panel 0) or memory (panel 1), limits drawn."""
    metric, limit_key, xlabel, unit = PANELS[panel]
    span = x_range(studies, metric, limit_key)
    fig = go.Figure()
    for i, study in enumerate(studies):
        tint = color(i)
        groups = (
            ("front", lambda p: p.pareto, 11, 1.0, {"color": "black", "width": 1}),
            ("other", lambda p: p.trained and not p.pareto, 7, 0.35, {"width": 0}),
        )
        for name, keep, size, opacity, line in groups:
            for compressed, symbol in ((False, "circle"), (True, "diamond")):
                chosen = [p for p in study.points if keep(p) and p.compressed == compressed]
                kind = "compressed" if compressed else "fp16 dense"
                fig.add_trace(
                    _markers(
                        study,
                        chosen,
                        metric,
                        f"{study.name}: {name}, {kind}",
                        tint,
                        {"size": size, "opacity": opacity, "symbol": symbol, "line": line},
                        labels=name == "front",
                    )
                )
        over = [p for p in study.points if not p.trained]
        fig.add_trace(
            _markers(
                study,
                over,
                metric,
                f"{study.name}: over a limit, untrained",
                tint,
                {"size": 7, "opacity": 0.5, "symbol": "x"},
                labels=False,
            )
        )
        limit = study.limits.get(limit_key)
        if limit:
            text = f"{study.hardware} limit {limit:.4g} {unit}"
            _limit_line(fig, limit, text, tint, i, right=text_right_of(limit, span))
    fig.update_xaxes(type="log", title=xlabel, range=[math.log10(x) for x in span])
    fig.update_yaxes(title="held-out bits per byte (lower is better)")
    fig.update_layout(
        title={"text": f"quality vs {xlabel.split(' (')[0]}", "x": 0.01},
        height=480,
        showlegend=True,
        legend={"font": {"size": 10}, "orientation": "h", "y": -0.18},
        **LAYOUT,
    )
    return fig


def _markers(
    study: StudyData,
    points: list[Point],
    metric: str,
    name: str,
    tint: str,
    marker: dict[str, object],
    *,
    labels: bool,
) -> go.Scatter:
    return go.Scatter(
        x=[getattr(p, metric) for p in points],
        y=[p.bpb for p in points],
        mode="markers+text" if labels else "markers",
        text=[f"#{p.trial}" for p in points] if labels else None,
        textposition="top right",
        textfont={"size": 10},
        name=name,
        legendgroup=study.name,
        visible=True if points else "legendonly",
        showlegend=bool(points),
        marker={"color": tint, **marker},
        error_y={"type": "data", "array": [p.sd for p in points], "visible": labels, "width": 3},
        hovertext=[_hover(study, p) for p in points],
        hoverinfo="text",
    )


def _limit_line(
    fig: go.Figure, limit: float, text: str, tint: str, row: int, *, right: bool
) -> None:
    """A vertical dashed line at `limit`. On a log axis plotly places shapes in data units but
    annotations in log10 units (which is why `add_vline`'s annotation lands far off)."""
    fig.add_shape(
        type="line",
        xref="x",
        yref="paper",
        x0=limit,
        x1=limit,
        y0=0,
        y1=1,
        line={"color": tint, "dash": "dash", "width": 2},
    )
    fig.add_annotation(
        x=math.log10(limit),
        xref="x",
        y=1 - 0.06 * row,
        yref="paper",
        text=text,
        showarrow=False,
        xanchor="left" if right else "right",
        yanchor="top",
        font={"color": tint, "size": 11},
        bgcolor="rgba(255,255,255,0.8)",
    )


def hypervolume_figure(studies: list[StudyData]) -> go.Figure:
    fig = go.Figure()
    for i, study in enumerate(studies):
        if not study.hv_history:
            continue
        fig.add_trace(
            go.Scatter(
                x=[n for n, _ in study.hv_history],
                y=[v for _, v in study.hv_history],
                mode="lines+markers",
                line={"shape": "hv", "color": color(i)},
                name=study.name,
            )
        )
    fig.update_layout(
        title={"text": "hypervolume after each trial (feasible, trained trials)", "x": 0.01},
        xaxis_title="trial",
        yaxis_title="hypervolume (share of the reference box)",
        height=360,
        **LAYOUT,
    )
    return fig


def architecture_figure(studies: list[StudyData]) -> go.Figure:
    """The fronts' architectures side by side: one line per Pareto member."""
    entries = [(i, e) for i, s in enumerate(studies) for e in s.front]
    dims = [
        {"label": label, "values": [get(e) for _, e in entries]} for _, label, get in PARCOORD_DIMS
    ]
    if len(studies) > 1:
        line = {
            "color": [i for i, _ in entries],
            "colorscale": [[k / max(1, len(studies) - 1), color(k)] for k in range(len(studies))],
            "cmin": 0,
            "cmax": max(1, len(studies) - 1),
        }
    else:
        line = {
            "color": [e["metrics"]["bpb"] for _, e in entries],
            "colorscale": "Viridis_r",
            "showscale": True,
            "colorbar": {"title": "bits/byte"},
        }
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line, labelangle=-20))
    fig.update_layout(
        title={"text": "one line per Pareto member (drag along an axis to filter)", "x": 0.01},
        height=460,
        **{**LAYOUT, "margin": {"l": 60, "r": 40, "t": 110, "b": 30}},
    )
    return fig


def importance_figure(study: StudyData) -> go.Figure:
    """Horizontal bars: how much each searched parameter explains each objective."""
    fig = go.Figure()
    params = sorted(
        {p for scores in study.importances.values() for p in scores},
        key=lambda p: study.importances.get("bpb", {}).get(p, 0.0),
    )
    for k, (objective, scores) in enumerate(study.importances.items()):
        fig.add_trace(
            go.Bar(
                y=params,
                x=[scores.get(p, 0.0) for p in params],
                orientation="h",
                name=objective,
                marker_color=color(k + 3),
            )
        )
    fig.update_layout(
        title={"text": f"{study.name}: {study.importance_note}", "x": 0.01},
        barmode="group",
        xaxis_title="importance (normalised per objective)",
        height=max(320, 60 + 28 * len(params)),
        **LAYOUT,
    )
    return fig
