"""Fidelity: how long candidates train, which ones train longer, and what the front is judged on.

- `rungs`: the rungs of a study (r, eta*r, eta^2*r steps; warmup-stable-decay evaluation);
- `promotion`: the asynchronous (ASHA-style) promotion rule: non-dominated sorting over
  (bits per byte, decode, memory) at a rung, ties broken by hypervolume contribution;
- `noise`: paired seed statistics (mean, spread, the seed x architecture noise);
- `target`: learning-curve extrapolation to the training length the user states;
- `judge`: the quality each front candidate is judged on (top rung, or the target), with its
  uncertainty: what the front, the hypervolume, pareto.json, the report and export use.
"""
