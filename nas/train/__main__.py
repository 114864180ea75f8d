"""`python -m nas.train DIR data=...`: train an exported architecture with the Hugging Face Trainer.

DIR is a directory written by `python -m nas.export` (or a checkpoint this command saved, to train
further). The corpus is read and split like the search reads it (`data=default` is the Python
standard library's source), tokenized with DIR's tokenizer, and cut into windows of `seq_len`
tokens. After training, held-out bits per byte are measured, the compression recipe in
`DIR/compression.json` is applied where the compression code supports it (and measured again), and
the model is saved where `AutoModelForCausalLM.from_pretrained` loads it, with its tokenizer,
recipe, model card and a `training.json` of the run.
"""

from __future__ import annotations

import logging
import warnings

from nas.cli import wants_help
from nas.errors import run_cli

USAGE = """usage: python -m nas.train DIR [KEY=VALUE ...]

Trains the model in DIR (a `python -m nas.export` directory, or a checkpoint saved by this
command) with the Hugging Face Trainer, applies DIR/compression.json at the end, and saves a
checkpoint that AutoModelForCausalLM.from_pretrained loads.
  data=PATH          default | a .txt file | a folder of text files (default: Python's stdlib)
  steps=N            optimizer steps (default: the study's training target, else 200)
  seq_len=N          tokens per window (128)
  batch_size=N       windows per step (8)                lr=X          peak learning rate (3e-3)
  warmup_steps=N     linear warm-up, then cosine decay (10)
  corpus_mb=X        read at most this much text (4)     eval_windows=N  held-out windows (32)
  compress=false     keep the trained weights uncompressed
  out=DIR            default: DIR/trained                force=true    write into a non-empty out
  device=NAME        auto | cpu | cuda                   seed=N        (0)
  quiet=true         no progress bar
Switches (each written to training.json; README "Export a winner and train it"):
  qat=true           train with the recipe's bits and group size fake-quantized, convert at the end
  teacher=DIR        distil from checkpoint(s): DIR, A,B or [A,B] (averaged logits)
  distill_weight=X   loss = cross-entropy + X * KL to the teachers (1.0)
  temperature=X      the KL's softmax temperature (2.0)
  lora=true          LoRA adapters on the compressed model, merged, quantized again (needs weights)
  lora_rank=N (8)    lora_alpha=X (16)"""


def main(argv: list[str]) -> int:
    if not argv or wants_help(argv):
        print(USAGE)
        return 0
    from nas.train.args import parse_args

    directory, settings = parse_args(argv)  # checked before torch and transformers load
    from nas.cli import configure_logging

    # before transformers and peft load: torchao's missing-kernel notices stay off the console
    configure_logging(logging.WARNING)
    logging.getLogger("nas").setLevel(logging.INFO)
    from transformers.utils import logging as hf_logging

    from nas.train.run import train

    hf_logging.set_verbosity_warning()
    if settings.quiet:
        hf_logging.disable_progress_bar()  # loading and saving weights draw bars too
    warnings.filterwarnings("ignore", category=FutureWarning)
    result = train(directory, settings)
    if result.switches:
        print(f"switches: {', '.join(result.switches)}")
    print(
        f"loss {result.first_loss:.3f} -> {result.last_loss:.3f} over {result.steps} steps; "
        f"held-out bits per byte {result.bpb:.3f}"
    )
    if result.bpb_compressed is not None:
        print(
            f"compressed ({result.compression['summary']}): {result.bpb_compressed:.3f} bits/byte"
        )
    else:
        print(f"compression not applied: {result.compression['reason']}")
    print(f"saved {result.out} (AutoModelForCausalLM.from_pretrained loads it)")
    return 0


if __name__ == "__main__":
    run_cli(main)
