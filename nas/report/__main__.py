"""`python -m nas.report study.name=S`: runs/S/report.html (one self-contained page that opens
offline: plotly's JavaScript is embedded) and runs/S/pareto.png.

Several studies overlay their fronts: `python -m nas.report 'study.name=[A,B]'` (or
`studies=[A,B]`) writes runs/compare-A-B/. Any search override (`runs_dir=`, `study.storage=`)
finds studies the way the search stored them; `out=DIR` picks the output folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.cli import split_own, wants_help
from nas.errors import run_cli

USAGE = """usage: python -m nas.report study.name=NAME [KEY=VALUE ...]

Writes report.html (opens offline) and pareto.png for a study, or overlays several:
  study.name=NAME          the study (default: the search's default name)
  study.name=[A,B]         several studies, fronts overlaid (also: studies=[A,B])
  out=DIR                  output folder (default runs/NAME, or runs/compare-A-B)
  runs_dir=PATH, study.storage=URL, hardware=..., budget=...   as for python -m nas.search"""


@dataclass
class ReportArgs:
    out: str = ""  # default: runs/NAME, or runs/compare-A-B
    studies: Any = None  # [A,B]: several studies overlaid


def run_report(argv: list[str]) -> int:
    """Write the report of the studies `argv` names; the plain function behind the command."""
    from nas.cli import configure_logging
    from nas.study.lookup import load, resolve

    args, overrides = split_own(argv, ReportArgs)
    refs = resolve(overrides, args.studies)
    loaded = [(load(ref), ref) for ref in refs]  # an unknown study answers before plotly loads
    from nas.report.data import collect
    from nas.report.page import build_report
    from nas.report.png import latency_word

    configure_logging()
    # PED-ANOVA reminds that it ranks parameters for *low* values: what minimised objectives want.
    warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
    studies = [collect(study, ref) for study, ref in loaded]
    if args.out:
        out_dir = Path(args.out)
    elif len(refs) == 1:
        out_dir = refs[0].out_dir
    else:
        out_dir = refs[0].runs_dir / ("compare-" + "-".join(r.name for r in refs))
    files = build_report(studies, out_dir)
    for s in studies:
        hv = "n/a" if s.hypervolume is None else f"{s.hypervolume:.4g}"
        print(
            f"{s.name}: {len(s.points)} finished trials, front of {len(s.front)}, "
            f"hypervolume {hv}, {latency_word(s)}"
        )
    print(f"wrote {files.html} and {files.png}")
    return 0


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    return run_report(argv)


if __name__ == "__main__":
    run_cli(main)
