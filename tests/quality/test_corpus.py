"""The corpus: read no more than `corpus_mb`, hold some text out however few files there are, say
exactly why a corpus is too short, and rebuild a damaged cache instead of failing on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.errors import NasError
from nas.quality.corpus import (
    MIN_HELDOUT_BYTES,
    Corpus,
    encode,
    load_corpus,
    load_tokenizer,
)


def test_a_single_file_is_read_only_up_to_corpus_mb(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("é and some ascii text, line after line.\n" * 60_000)  # ~2.5 MB, 2-byte é
    corpus = load_corpus(str(big), max_mb=0.2, heldout_fraction=0.05)
    assert 199_000 <= corpus.n_bytes <= 200_000  # whole characters up to the limit
    assert len(corpus.heldout.encode()) >= MIN_HELDOUT_BYTES


def test_a_folder_reads_whole_files_but_none_beyond_corpus_mb(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("small file of text.\n" * 5_000)  # 100 kB
    (tmp_path / "b.txt").write_text("a huge file of text.\n" * 200_000)  # 4.2 MB
    corpus = load_corpus(str(tmp_path), max_mb=0.5, heldout_fraction=0.05)
    assert corpus.n_bytes <= 100_000 + 500_000 + 2  # the first file, then b.txt's first 0.5 MB


def test_few_files_are_split_by_position_and_never_share_text(tmp_path: Path) -> None:
    for i in range(3):  # fewer files than 1 / heldout_fraction = 20
        (tmp_path / f"{i}.txt").write_text("".join(f"file {i} line {n}\n" for n in range(8000)))
    corpus = load_corpus(str(tmp_path), max_mb=10, heldout_fraction=0.05)
    held = set(corpus.heldout.splitlines())
    assert len(corpus.heldout.encode()) >= MIN_HELDOUT_BYTES
    assert {f"file {i} line 7999" for i in range(3)} <= held  # every file's end is held out
    assert not held & set(corpus.train.splitlines())


def test_many_files_keep_the_file_split(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"{i:02}.txt").write_text(f"text of file {i}.\n" * 300)
    corpus = load_corpus(str(tmp_path), max_mb=10, heldout_fraction=0.05)
    assert "text of file 19." in corpus.heldout and "text of file 19." not in corpus.train
    assert "text of file 0." in corpus.train and "text of file 0." not in corpus.heldout


@pytest.mark.parametrize("size", [0, 3_000, 60_000])
def test_too_short_says_what_was_read_and_what_is_needed(tmp_path: Path, size: int) -> None:
    (tmp_path / "c.txt").write_text("x" * size)
    with pytest.raises(NasError) as refused:
        load_corpus(str(tmp_path / "c.txt"), max_mb=10, heldout_fraction=0.05)
    message = str(refused.value)
    held = size - int(size * 0.95)
    assert f"its {size} bytes of text leave {held} held-out bytes" in message
    assert f"needs {MIN_HELDOUT_BYTES}: give at least 81920 bytes of text" in message
    assert "corpus_mb" not in message  # the whole file was read: raising the limit cannot help


def test_a_corpus_cut_by_corpus_mb_suggests_raising_it(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("some text\n" * 10_000)
    with pytest.raises(NasError, match=r"or raise proxy\.corpus_mb"):
        load_corpus(str(tmp_path / "c.txt"), max_mb=0.01, heldout_fraction=0.05)


def test_damaged_caches_are_rebuilt(tmp_path: Path) -> None:
    text = "".join(f"line {i} of some text\n" for i in range(3000))
    corpus = Corpus(train=text, heldout=text[:5000], source="t", fingerprint="f00d")
    tokenizer = load_tokenizer("train", corpus, 300, tmp_path)
    cached = tmp_path / "tokenizer-f00d-300.json"
    cached.write_text(cached.read_text()[:100])  # cut off, as by a crash of an older version
    assert load_tokenizer("train", corpus, 300, tmp_path).to_str() == tokenizer.to_str()
    stream = tmp_path / "train.npy"
    ids = encode(tokenizer, text, stream)
    stream.write_bytes(stream.read_bytes()[:50])
    assert np.array_equal(encode(tokenizer, text, stream), ids)
    assert not list(tmp_path.glob(".*.tmp"))
