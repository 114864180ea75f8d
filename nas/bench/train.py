"""nas.train's switches against their plain counterparts: QAT, distillation, LoRA recovery.

    python -m nas.bench train [base_steps=1200] [steps=300] [seeds=2] [bits=4] [group_size=32]
                              [lr=1e-3] [lora_lr=1e-2] [lora_rank=8] [eval_windows=64]
                              [corpus_mb=4] [runs_dir=runs] [cache_dir=...]

One small dense Llama (2 layers, 4 heads of 32, FFN 512, the proxy's vocabulary) is exported as a
model directory and trained `base_steps` steps by `python -m nas.train` on the proxy corpus
(cached under `<cache_dir>/bench-train/`): "the trained model". Then, `steps` steps each, per seed
(the seed draws the batches, and a fresh student's initialisation):
- (a) QAT: fine-tune the trained model in float then quantize (int`bits` g`group_size`, round-to-
  nearest) vs `qat=true` (the same steps fake-quantized, converted);
- (b) distillation: a fresh student of the same shape trained plain vs `teacher=` the trained
  model (LM loss + 1.0 x KL at temperature 2, the defaults);
- (c) recovery after quantization: the quantized trained model as it is, vs a full fine-tune then
  quantization (run (a)'s plain row), vs `lora=true` (adapters on the quantized model, merged,
  quantized again; `lora_lr`, as LoRA is usually run at ~10x a full fine-tune's rate).
Every row is held-out bits per byte of the shipped (quantized where the row says so) weights on
`eval_windows` windows, as `nas.train` measures it; mean and sample sd over seeds, and the paired
Δ against the plain counterpart (mean ± sd of the per-seed differences). Writes
`<runs_dir>/bench/train.json` and prints a markdown table. The default size is ~4,200 training
steps of a 0.75M-parameter model: about 7 minutes of one CPU core (0.083 CPU-s per step and
~2.5 s per run, measured on two small runs with OMP_NUM_THREADS=1), so well under 15 minutes on
2 cores.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nas.arch import ArchConfig
from nas.bench import split_options
from nas.config.compose import load_settings
from nas.errors import NasError
from nas.files import atomic_write

BENCH_KEYS = {
    "base_steps": 1200, "steps": 300, "seeds": 2, "bits": 4, "group_size": 32, "lr": 1e-3,
    "lora_lr": 1e-2, "lora_rank": 8, "eval_windows": 64, "seq_len": 64, "batch_size": 16,
    "corpus_mb": 4.0,
}  # fmt: skip
# (row, comparison, switches, starts from, its plain counterpart)
RUNS = [
    ("full fine-tune, then PTQ", "a", {}, "trained", None),
    ("QAT (qat=true)", "a", {"qat": True}, "trained", "full fine-tune, then PTQ"),
    ("student, plain", "b", {"compress": False}, "fresh", None),
    ("student, teacher=trained", "b", {"compress": False, "teacher": "T"}, "fresh",
     "student, plain"),
    ("LoRA (lora=true)", "c", {"lora": True}, "trained", "full fine-tune, then PTQ"),
]  # fmt: skip
TITLES = {
    "a": "(a) QAT vs fine-tune then PTQ",
    "b": "(b) distillation vs plain training from scratch",
    "c": "(c) recovery after quantization: LoRA vs full fine-tune",
}


def bench_arch(vocab_size: int) -> ArchConfig:
    return ArchConfig(
        n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, ffn_dim=512, vocab_size=vocab_size
    )


def model_dir(out: Path, arch: ArchConfig, tokenizer: Any, recipe: dict[str, Any] | None) -> Path:
    """An exported-style model directory: config, tokenizer and compression.json, no weights."""
    from nas.export.write import wrap_tokenizer
    from nas.quality.models import hf_config

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.raw.json"))
    wrap_tokenizer(out / "tokenizer.raw.json", 4096).save_pretrained(out)
    (out / "tokenizer.raw.json").unlink()
    config = hf_config(arch, max_positions=4096)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(out)
    if recipe is not None:
        (out / "compression.json").write_text(json.dumps({"compression": recipe, "recipe": None}))
    return out


def _settings(own: dict[str, Any], cfg: Any, **changes: Any):
    from nas.train.args import TrainSettings

    fixed = dict(
        data=cfg.proxy.corpus,
        corpus_mb=own["corpus_mb"],
        heldout_fraction=cfg.proxy.heldout_fraction,
        seq_len=own["seq_len"],
        batch_size=own["batch_size"],
        eval_windows=own["eval_windows"],
        warmup_steps=5,
        quiet=True,
        force=True,
    )
    return TrainSettings(**{**fixed, **changes})


def trained_model(own, cfg, arch, tokenizer, cache: Path) -> Path:
    """The trained model (a `nas.train` checkpoint with an int`bits` recipe), cached."""
    from nas.train.run import train

    recipe = {"weight_bits": own["bits"], "group_size": own["group_size"]}
    settings = _settings(own, cfg, steps=own["base_steps"], lr=3e-3, compress=False)
    key = json.dumps([arch.to_dict(), asdict(settings), recipe, tokenizer.to_str()])
    out = cache / "bench-train" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (out / "trained" / "training.json").is_file():
        print(f"trained model from {out / 'trained'}", flush=True)
        return out / "trained"
    init = model_dir(out / "init", arch, tokenizer, recipe)
    print(f"training {arch.params / 1e6:.2f}M parameters for {own['base_steps']} steps", flush=True)
    settings.out = str(out / "trained")
    result = train(init, settings)
    print(f"  held-out bpb {result.bpb:.4f}", flush=True)
    return out / "trained"


def run_all(own, cfg, trained: Path, fresh: Path, work: Path) -> list[dict[str, Any]]:
    from nas.train.run import train

    rows = []
    for seed in range(own["seeds"]):
        for index, (name, part, switches, start, _) in enumerate(RUNS):
            changes = dict(switches, steps=own["steps"], seed=seed, out=str(work / f"{index}"))
            changes["lr"] = own["lora_lr"] if switches.get("lora") else own["lr"]
            if "teacher" in changes:
                changes["teacher"] = str(trained)
            if switches.get("lora"):
                changes["lora_rank"] = own["lora_rank"]
            result = train(trained if start == "trained" else fresh, _settings(own, cfg, **changes))
            shipped = result.bpb_compressed if result.bpb_compressed is not None else result.bpb
            row = {"row": name, "part": part, "seed": seed, "bpb": shipped, "float_bpb": result.bpb}
            rows.append(row)
            print(f"  seed {seed} {name}: {shipped:.4f}", flush=True)
            start_bpb = result.compression.get("training", {}).get("bpb_before_training")
            if start_bpb is not None:  # the quantized trained model LoRA started from
                rows.append(
                    {"row": "PTQ, no fine-tune", "part": "c", "seed": seed, "bpb": start_bpb}
                )
    return rows


def _stats(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.4f} | {sd:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown table: per row, mean and sd over seeds, and the paired Δ vs its counterpart."""
    counterpart = {name: plain for name, _, _, _, plain in RUNS}
    lines = ["| comparison | row | bpb mean | sd | Δ vs plain (paired) |", "|---|---|---|---|---|"]
    for part, title in TITLES.items():
        names = ["PTQ, no fine-tune"] if part == "c" else []
        names += [n for n, p, *_ in RUNS if p == part or (part == "c" and n.startswith("full"))]
        for name in names:
            mine = {r["seed"]: r["bpb"] for r in rows if r["row"] == name}
            if not mine:
                continue
            plain = counterpart.get(name)
            delta = ""
            if plain:
                theirs = {r["seed"]: r["bpb"] for r in rows if r["row"] == plain}
                diffs = [mine[s] - theirs[s] for s in mine if s in theirs]
                sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
                delta = f"{statistics.fmean(diffs):+.4f} ± {sd:.4f}"
            lines.append(f"| {title} | {name} | {_stats(list(mine.values()))} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    own, overrides = split_options(argv, BENCH_KEYS)
    if min(own["base_steps"], own["steps"], own["seeds"], own["eval_windows"]) < 1:
        raise NasError("base_steps, steps, seeds and eval_windows must be >= 1")
    if own["bits"] not in (4, 8):
        raise NasError(f"bits must be 4 or 8, got {own['bits']}")
    cfg = load_settings(["budget=cpu", "hardware=local_cpu", *overrides])
    from transformers.utils import logging as hf_logging

    from nas.quality.data import prepare_data

    hf_logging.disable_progress_bar()  # ten checkpoints saved and loaded: keep the table readable

    _, tokenizer, info = prepare_data(cfg.proxy, Path(cfg.cache_dir))
    arch = bench_arch(info["vocab_size"])
    cache = Path(cfg.cache_dir)
    trained = trained_model(own, cfg, arch, tokenizer, cache)
    out_dir = Path(cfg.runs_dir) / "bench"
    fresh = model_dir(out_dir / "train-runs" / "fresh", arch, tokenizer, None)
    rows = run_all(own, cfg, trained, fresh, out_dir / "train-runs")
    report = {"options": own, "arch": arch.to_dict(), "trained": str(trained), "rows": rows}
    atomic_write(out_dir / "train.json", json.dumps(report, indent=2))
    print(f"\n{table(rows)}\n\nwrote {out_dir / 'train.json'}")
    return 0
