"""`python -m nas.predict hardware=H arch=PATH/config.json [compression.KEY=VALUE ...]`.

How fast will this model run on my device? Reads a Hugging Face `config.json` of a Llama-style
model (llama, mistral, qwen2, qwen3, ...) or a supported MoE model (qwen3_moe, qwen2_moe without
shared experts, mixtral) and prints one JSON object: decode_ms, tokens_per_s, prefill_ms,
memory_mb (each with a one-sigma `_std`), calibrated, the predictor's provenance, and an
energy-per-token estimate. Compression keys: weight_bits (16, 8, 4), group_size, sparsity,
sparsity_pattern.
"""

from __future__ import annotations

import json

from nas.cli import wants_help
from nas.errors import run_cli


def main(argv: list[str]) -> int:
    if not argv or wants_help(argv):
        print(__doc__)
        return 0
    from nas.predict.run import run_predict

    print(json.dumps(run_predict(argv), indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
