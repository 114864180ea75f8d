"""`python -m nas.report`: a study's report page and static figure (a command).

- `__main__`: the command line and `run_report(argv)`;
- `data`: what the report shows about one study, read from its trials (`nas.records`);
- `page`: report.html; `figures`: its interactive plotly figures;
- `png`: pareto.png (matplotlib), and the look both share (colours, markers, titles).
"""
