"""Quality: the text, the models and the short training that score a candidate (shared).

- `corpus`: the default corpus, user corpora and the BPE tokenizer; `data`: their token streams;
- `models`: `ArchConfig` <-> `transformers` models (Llama, Qwen3-MoE);
- `training`: the proxy training run (from scratch, or from a given model distilled from a
  teacher) and held-out bits per byte;
- `pruned`: the prune space's proxy: children pruned from a parent, distilled from it, replayed;
- `scorers`: quality proxies (`train`, `params`, `extrapolate`), chosen by `_target_`;
- `early_stop`: multi-objective early stopping of proxy runs.
"""
