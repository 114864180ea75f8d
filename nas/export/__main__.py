"""`python -m nas.export study.name=S trial=N out=DIR`: a trial as a Hugging Face model directory.

`trial=` takes a number, `pareto` (every member of the Pareto front, one sub-directory each) or
`best:METRIC` (the trained trial within the device limits with the best value of one metric, e.g.
`best:bpb`, `best:decode_ms`, `best:memory_mb`).
"""

from __future__ import annotations

from nas.cli import wants_help
from nas.errors import run_cli

USAGE = """usage: python -m nas.export study.name=NAME trial=N|pareto|best:METRIC [KEY=VALUE ...]

Writes a trial as a Hugging Face model directory (config.json, generation_config.json, tokenizer,
compression.json, README.md model card, nas_trial.json, model.onnx).
  trial=N              one trial by number
  trial=pareto         every Pareto member, one sub-directory trial-<N> each
  trial=best:METRIC    the trained trial within the device limits with the best METRIC
                       (bpb, decode_ms, prefill_ms, memory_mb, params, tokens_per_s, ...)
  out=DIR              default: <runs_dir>/<study>/export/<trial-N | pareto>
  force=true           write into an existing, non-empty out (files of the same name are replaced)
  onnx=false           skip model.onnx (its export takes ~10-20 s per model)
  parent=DIR           a prune study's parent, when it is not where the search found it (the
                       trained child's weights are rebuilt from it: config, model.safetensors)
  runtime=executorch   also model.pte: the decode step in the trial's int8/int4 format for
                       ExecuTorch (XNNPACK), checked against torch (pip install -e '.[executorch]')
The study is found like the search finds it: study.name=, runs_dir=, study.storage= (or the
search's own overrides, e.g. hardware=rpi5 budget=smoke)."""


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(USAGE)
        return 0
    from nas.export.run import run_export  # deferred: it loads Optuna and transformers when due

    done = run_export(argv)
    for item in done:
        print(f"trial {item.trial}: {item.params:,} parameters -> {item.path}")
    if any(item.weights for item in done):  # a prune study's trained children
        print(
            "load with: AutoModelForCausalLM.from_pretrained(DIR); keep distilling with: "
            "python -m nas.train DIR teacher=PARENT"
        )
        return 0
    print(
        "load with: AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(DIR)); "
        "train with: python -m nas.train DIR"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
