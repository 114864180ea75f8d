"""slm-nas: hardware-aware architecture and compression search for small language models.

The shared vocabulary (imports nothing above it):
- `arch`: `ArchConfig`, `CompressionConfig`, `Candidate`, their labels, reading an HF config;
- `shrink`: `Shrink` (train one shape, prune to another) and the shapes structured pruning leaves;
- `hardware`: a device profile (the `hardware` config group's schema);
- `errors`: `NasError`, one-line messages, password redaction, `run_cli` (explains library errors);
- `config`: Hydra composition into typed settings, validated once (`load_settings`);
- `cli`: log set-up and each command's own `KEY=VALUE` settings (`split_own`);
- `records`: what a trial and a study store; the only reader and writer of trial attributes;
- `files`: atomic writes of output files (whole or absent, the umask's mode).

Shared parts (import the vocabulary and each other, never a command):
- `study`: storages and their errors, the SQLite lock, opening and finding studies;
- `objectives`: cheap objectives and device limits, the Pareto front, the hypervolume;
- `samplers`: building the configured sampler, the cost-aware sampler, fast TPE;
- `quality`: corpus, tokenizer, models, proxy training, quality scorers, early stopping;
- `fidelity`: rungs, promotion, seed statistics, the training target, what the front judges;
- `compression`: quantization (rtn, GPTQ, AWQ), sparsity (magnitude, Wanda, SparseGPT), structured
  pruning, recovery, QAT, recipes;
- `onnx`: decode/prefill graphs, the exportable MoE kernels, checks, measurement.
- `parent`: a pretrained parent checkpoint, its activation importance, children pruned from it.
- `executorch`: the same graphs as ExecuTorch programs (XNNPACK), checked and measured (an
  optional extra).

Commands (`python -m nas.X`, each a package with its `__main__`):
- `search`: the search; `export`: a trial as a Hugging Face model directory;
- `report`: report.html and pareto.png; `dashboard`: optuna-dashboard for a study;
- `calibrate`: measure a device and fit its predictor; `predict`: price a model config;
- `train`: train an exported model; `bench`: the benchmarks behind BENCHMARKS.md.

Plugins outside `nas/`: `search_spaces/` and `predictors/` (they import only the vocabulary).
"""

from __future__ import annotations

__version__ = "0.1.0"
