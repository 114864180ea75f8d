"""The study every bad input is aimed at, and the bad files the sweep hands to the commands."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from nas.errors import run_cli
from nas.quality.corpus import Corpus, train_tokenizer
from nas.search.__main__ import main
from tests.bad_input.sweep import SECRET, settle
from tests.predictors.helpers import TRUE_COEF, profile, rows_from, varied_candidates


@dataclass(frozen=True)
class Stored:
    """A finished two-trial smoke study, B, under `runs`."""

    runs: Path
    cache: Path
    base: list[str]  # the search's arguments for B

    @property
    def study_args(self) -> dict[str, list[str]]:
        """What each command is given first to aim at B (commands without a study: nothing)."""
        finder = [f"runs_dir={self.runs}", f"cache_dir={self.cache}", "budget=smoke"]
        return {
            "search": self.base,
            **{c: [*finder, "study.name=B"] for c in ("export", "report", "dashboard")},
            **{c: [] for c in ("calibrate", "predict", "train", "bench")},
        }


@pytest.fixture(scope="session")
def stored(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Stored:
    runs = tmp_path_factory.mktemp("bad") / "runs"
    base = ["budget=smoke", f"runs_dir={runs}", f"cache_dir={shared_cache}", "quiet=true",
            "study.name=B", "search_space.n_layers=[1]", "search_space.n_experts=[1]"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        run_cli(main, [*base, "study.n_trials=2"])
    assert done.value.code == 0
    settle(runs / "B" / "study.db")
    return Stored(runs, shared_cache, base)


def _damaged(stored: Stored, root: Path, where: str) -> None:
    """A copy of B whose study.db is damaged in its header, or inside its pages.

    The copy's write-ahead log is folded into it first: pages still in a log are read from
    there, so a copy that kept one could read undamaged pages, and whether it opened would
    depend on when B's log was last checkpointed.
    """
    shutil.copytree(stored.runs / "B", root / "B", ignore=shutil.ignore_patterns("*.lock", "*-shm"))
    db = root / "B" / "study.db"
    settle(db)  # fails, saying why, if the log cannot be folded in
    data = bytearray(db.read_bytes())
    if where == "header":
        data[:100] = b"\xa5" * 100
    else:
        for page in range(2, len(data) // 4096):  # the tables' pages, not the schema
            data[page * 4096 + 8 : page * 4096 + 200] = b"\xff" * 192
    db.write_bytes(bytes(data))


def _corpora(bad: Path) -> None:
    text = "".join(f"line {i} of a short text.\n" for i in range(5000))
    (bad / "short.txt").write_text(text)  # enough for a held-out split, too little for seq_len
    (bad / "empty.txt").write_text("")
    (bad / "model.bin").write_bytes(bytes(range(256)) * 400)
    (bad / "latin1.txt").write_bytes("café crème brûlée ".encode("latin-1") * 3000)
    (bad / "notext").mkdir()
    (bad / "notext" / "weights.bin").write_bytes(b"\0" * 10)
    (bad / "tiny").mkdir()  # three files, 9 KB in all: too little for any held-out split
    for i in range(3):
        (bad / "tiny" / f"{i}.txt").write_text(f"file {i} holds a little text.\n" * 100)
    corpus = Corpus(train=text, heldout="", source="short", fingerprint="x")
    train_tokenizer(corpus, 384).save(str(bad / "other_tokenizer.json"))
    (bad / "broken_tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')


def _hf_configs(bad: Path) -> None:
    llama = {"model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2,
             "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
             "vocab_size": 1000}  # fmt: skip
    gpt2 = {"model_type": "gpt2", "n_head": 12, "n_embd": 768, "n_layer": 12, "vocab_size": 50257}
    configs = {
        "llama": llama,
        "gpt2": gpt2,
        "zero_heads": {**llama, "num_attention_heads": 0},
        "bad_width": {**llama, "hidden_size": 250},
        "bad_kv": {**llama, "num_key_value_heads": 3},
        "text_layers": {**llama, "num_hidden_layers": "two"},
        "list": [llama],
    }
    for name, config in configs.items():
        (bad / f"{name}.json").write_text(json.dumps(config))
    (bad / "garbage.json").write_text("garbage{")
    (bad / "model").mkdir()  # a model directory whose config.json is garbage
    (bad / "model" / "config.json").write_text("garbage{")
    (bad / "model" / "tokenizer.json").write_text("{}")


def _parents(bad: Path) -> None:
    """Parent directories for search_space=prune that each fail one way: no config.json is
    `notext`; here a gpt2 (unsupported family), a checkpoint whose weights are garbage, one
    without a tokenizer, one whose tokenizer outgrows its embedding, and a Llama-3-70B-shaped
    one (its weights file a stand-in: the size check comes before any weight is read)."""
    llama = {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
             "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 384,
             "tie_word_embeddings": True}  # fmt: skip
    huge = {**llama, "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_size": 8192,
            "intermediate_size": 28672, "num_hidden_layers": 80, "vocab_size": 128256,
            "tie_word_embeddings": False}  # fmt: skip
    parents = {
        "gpt2-parent": {
            "model_type": "gpt2",
            "n_head": 12,
            "n_embd": 768,
            "n_layer": 12,
            "vocab_size": 50257,
        },
        "garbage-parent": llama,
        "no-tokenizer-parent": llama,
        "small-vocab-parent": {**llama, "vocab_size": 300},
        "huge-parent": huge,
    }
    for name, config in parents.items():
        folder = bad / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "model.safetensors").write_bytes(b"not safetensors" * 10)
        if name != "no-tokenizer-parent":
            shutil.copy(bad / "other_tokenizer.json", folder / "tokenizer.json")


def _calibration(bad: Path) -> None:
    """A bundle's manifest and results rows, then each broken one way."""
    rows = rows_from(TRUE_COEF, varied_candidates(8), profile())
    points = [{k: r[k] for k in ("id", "split", "arch", "compression")} for r in rows]
    manifest = {
        "device": "local_cpu",
        "threads": 2,
        "rounds": 1,
        "activations": "int8",
        "points": points,
    }
    good = [{"id": r["id"], "device": "local_cpu", "decode_ms": r["decode_ms"],
             "prefill_ms": r["prefill_ms"], "memory_mb": r["memory_mb"]} for r in rows]  # fmt: skip
    results = {
        "nan": [{**good[0], "decode_ms": float("nan")}, *good[1:]],
        "inf": [{**good[0], "prefill_ms": float("inf")}, *good[1:]],
        "negative": [{**good[0], "memory_mb": -3.0}, *good[1:]],
        "unknown_id": [{**good[0], "id": "nope"}, *good[1:]],
        "other_device": [{**good[0], "device": "rpi5"}, *good[1:]],
    }
    cal = bad / "cal"
    cal.mkdir()
    (cal / "manifest.json").write_text(json.dumps(manifest))
    for name, lines in results.items():  # json.dumps writes NaN and Infinity, as JSON lets it
        (cal / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (cal / "not_json.jsonl").write_text("{id: p0\n")
    (cal / "list.jsonl").write_text("[1, 2]\n")
    for name, text in {"broken": '{"device": "local_cpu", "points": [', "empty": "{}"}.items():
        (cal / name).mkdir()
        (cal / name / "manifest.json").write_text(text)
        (cal / name / "results.jsonl").write_text(json.dumps(good[0]) + "\n")


@pytest.fixture(scope="session")
def bad(tmp_path_factory: pytest.TempPathFactory, stored: Stored) -> Path:
    """Files and folders for the sweep: wrong corpora, tokenizers, model configs, calibration
    results, damaged study databases, a file where a folder should be."""
    bad = tmp_path_factory.mktemp("bad-files")
    (bad / "plain").write_text("a file where a folder should be")
    (bad / "full").mkdir()
    (bad / "full" / "old.txt").write_text("an export directory that is not empty")
    _corpora(bad)
    _parents(bad)
    _hf_configs(bad)
    _calibration(bad)
    for where in ("header", "page"):
        _damaged(stored, bad / f"damaged-{where}", where)
    return bad


@pytest.fixture
def values(stored: Stored, bad: Path) -> dict[str, str]:
    return {"bad": str(bad), "runs": str(stored.runs), "secret": SECRET}
