"""`python -m nas.search`: the hardware-aware architecture + compression search (a command).

- `__main__`: the command line; `run`: `run_search(settings)`, the plain function behind it;
- `trial`: one trial (price, train, compress, score); `ladder`: its climb through the rungs;
  `late`: late promotions (a candidate that stayed goes on once it is in its rung's top share);
- `prune`: a prune study's parent (checked, its importance, its own bits per byte);
- `workers`, `owners`: who runs trials and what happens when one dies; `progress`: the live bar
  and log lines.

Imports nothing itself, so that `--help` and argument errors answer before torch loads.
"""
