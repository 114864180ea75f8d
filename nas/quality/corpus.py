"""Real text for the quality proxy, a tokenizer for it, and the token streams the proxy trains on.

The default corpus is the source of the Python standard library (code, comments, docstrings and the
pydoc topic texts): it is on every machine that runs this engine, needs no download, and is ~15 MB.
A user corpus is a local `.txt` file or a folder of text files, read up to `proxy.corpus_mb`.
Files, not lines, are split into train and held-out where there are enough of them (else each
file's end is held out), so that held-out text is never seen in training.

Tokenizers are byte-level BPE trained on the corpus with `tokenizers` and cached; bits per byte are
computed from exact byte counts, so results do not depend on the tokenizer's vocabulary size.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nas.errors import NasError
from nas.files import atomic_write

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]  # ids 0 and 1 (nas.quality.models.BOS_EOS_ID, PAD_ID)
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".text", ""}
MIN_HELDOUT_BYTES = 4096


@dataclass(frozen=True)
class Corpus:
    """Train and held-out text, with a fingerprint that names it in caches and study attributes."""

    train: str
    heldout: str
    source: str
    fingerprint: str

    @property
    def n_bytes(self) -> int:
        return len(self.train.encode()) + len(self.heldout.encode())


def default_corpus_files() -> list[Path]:
    """The standard library's .py files (no tests, no site-packages), in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    return sorted(
        p for p in stdlib.rglob("*.py") if not skip.intersection(p.relative_to(stdlib).parts)
    )


def _user_corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise NasError(f"corpus not found: {path}; pass proxy.corpus=PATH to a .txt file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise NasError(f"corpus folder {path} holds no text files (.txt, .md, .rst, .py)")
    return files


def _read_text(path: Path, limit: int) -> str:
    """The first `limit` bytes of a text file (whole characters only), decoded as UTF-8."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit)
    except OSError as err:
        raise NasError(f"cannot read corpus file {path}: {err.strerror}") from None
    if b"\x00" in data[:8192]:
        raise NasError(f"corpus file {path} looks binary (it contains NUL bytes); give text files")
    try:  # not final: a character cut at `limit` is dropped, not an error
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError as err:
        raise NasError(
            f"corpus file {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None


def _split(texts: list[str], heldout_fraction: float) -> tuple[str, str]:
    """Train and held-out text. Every k-th file (k = 1 / heldout_fraction) is held out, a
    deterministic split spread over the whole corpus; with fewer files than that, or too little
    text in the held-out files, each file is split by position instead: its last
    `heldout_fraction` is held out (as a single file always is). Held-out text is never trained on.
    """
    every = max(2, round(1 / heldout_fraction))
    if len(texts) >= every:
        train = "\n".join(t for i, t in enumerate(texts) if i % every != every - 1)
        heldout = "\n".join(t for i, t in enumerate(texts) if i % every == every - 1)
        if len(heldout.encode()) >= MIN_HELDOUT_BYTES and train.strip():
            return train, heldout
    cuts = [int(len(t) * (1 - heldout_fraction)) for t in texts]
    train = "\n".join(t[:cut] for t, cut in zip(texts, cuts, strict=True))
    heldout = "\n".join(t[cut:] for t, cut in zip(texts, cuts, strict=True))
    return train, heldout


def _too_short(spec: str, total: int, heldout: str, fraction: float, capped: bool) -> NasError:
    need = int(MIN_HELDOUT_BYTES / fraction)
    more = " or raise proxy.corpus_mb" if capped else ""
    return NasError(
        f"corpus {spec} is too short: its {total} bytes of text leave {len(heldout.encode())} "
        f"held-out bytes at proxy.heldout_fraction={fraction:g}, and the held-out split needs "
        f"{MIN_HELDOUT_BYTES}: give at least {need} bytes of text{more}"
    )


def load_corpus(spec: str, *, max_mb: float, heldout_fraction: float) -> Corpus:
    """Read a corpus (`default` or a path) up to `max_mb` and split it into train/held-out.

    Whole files are read until `max_mb` is reached; no file is read beyond its first `max_mb`
    (a single 74 MB file at `corpus_mb=1` reads 1 MB). See `_split` for the split.
    """
    files = default_corpus_files() if spec == "default" else _user_corpus_files(Path(spec))
    budget = int(max_mb * 1_000_000)
    texts: list[tuple[str, str]] = []
    total = 0
    for path in files:
        if total >= budget:
            break
        text = _read_text(path, budget)
        texts.append((str(path), text))
        total += len(text.encode())
    capped = total >= budget
    train, heldout = _split([t for _, t in texts], heldout_fraction)
    if len(heldout.encode()) < MIN_HELDOUT_BYTES or not train.strip():
        raise _too_short(spec, total, heldout, heldout_fraction, capped)
    digest = hashlib.sha256()
    for name, text in texts:
        digest.update(Path(name).name.encode())
        digest.update(hashlib.sha256(text.encode()).digest())
    return Corpus(
        train=train,
        heldout=heldout,
        source=spec if spec != "default" else "python-stdlib",
        fingerprint=digest.hexdigest()[:16],
    )


def train_tokenizer(corpus: Corpus, vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style) trained on the corpus's training split."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = corpus.train.splitlines(keepends=True)
    tokenizer.train_from_iterator((lines[i : i + 256] for i in range(0, len(lines), 256)), trainer)
    return tokenizer


def load_tokenizer(spec: str, corpus: Corpus, vocab_size: int, cache_dir: Path) -> Tokenizer:
    """`train`: a BPE tokenizer for this corpus, trained once and cached; else a tokenizer.json."""
    if spec != "train":
        path = Path(spec)
        if not path.is_file():
            raise NasError(
                f"tokenizer file not found: {path}; pass proxy.tokenizer=train or a path"
            )
        try:
            return Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises bare Exceptions for malformed files
            first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise NasError(f"tokenizer file {path} cannot be read: {first_line}") from None
    cached = cache_dir / f"tokenizer-{corpus.fingerprint}-{vocab_size}.json"
    if cached.is_file():
        try:
            return Tokenizer.from_file(str(cached))
        except Exception:  # a damaged cache (tokenizers raises bare Exceptions): rebuild it
            log.warning("the cached tokenizer %s cannot be read; training it again", cached)
    log.info("training a %d-token BPE tokenizer on %s", vocab_size, corpus.source)
    tokenizer = train_tokenizer(corpus, vocab_size)
    # Atomic: concurrent workers never read a half-written file, a full disk leaves none.
    atomic_write(cached, tokenizer.to_str(), setting="cache_dir")
    return tokenizer


def token_bytes(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 byte length of every token id (0 for special tokens): the denominator of bits/byte."""
    vocab = tokenizer.get_vocab()
    lengths = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    byte_level = pre_tokenizers.ByteLevel.alphabet()
    for token, idx in vocab.items():
        if token in SPECIAL_TOKENS:
            continue
        if all(ch in byte_level for ch in token):
            lengths[idx] = len(token)  # byte-level BPE: one character per byte
        else:
            lengths[idx] = len(token.encode())
    return lengths


def encode(tokenizer: Tokenizer, text: str, cache: Path | None = None) -> np.ndarray:
    """Token ids of `text` as int32, cached on disk when `cache` is given."""
    if cache is not None and cache.is_file():
        try:
            return np.load(cache)
        except (OSError, ValueError, EOFError):  # a damaged cache: encode again
            log.warning("the cached token stream %s cannot be read; encoding again", cache)
    chunks = text.splitlines(keepends=True)
    batch = ["".join(chunks[i : i + 64]) for i in range(0, len(chunks), 64)]
    ids = np.fromiter((t for enc in tokenizer.encode_batch(batch) for t in enc.ids), dtype=np.int32)
    if cache is not None:
        buffer = io.BytesIO()
        np.save(buffer, ids)
        atomic_write(cache, buffer.getvalue(), setting="cache_dir")
    return ids
