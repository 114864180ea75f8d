"""The objectives and what is made of them (shared by the search, the samplers and the reports).

- `cheap`: parameters, memory and latency from the predictors, and the device constraints;
- `pareto`: the front (`front_members`), pareto.json / pareto.csv and the console table;
- `hypervolume`: the reference point and the normalised hypervolume of a front.
"""
