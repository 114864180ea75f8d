"""Samplers: the Optuna sampler a study runs, built from the `sampler` config group.

- `factory`: `build_sampler`, which hands each sampler what it asks for by name (a seed; the
  study's search space, cheap objectives and device limits).
- `cost_aware`: the default; prices a pool of candidates before proposing one.
- `fast_tpe`: Optuna's multivariate TPE with its per-trial bookkeeping done once.
"""
