"""The proxy's data: corpus -> tokenizer -> token streams, all cached under the cache folder."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from nas.config.schema import ProxyConfig
from nas.quality.corpus import encode, load_corpus, load_tokenizer, token_bytes
from nas.quality.training import ProxyData


def prepare_data(
    proxy: ProxyConfig, cache_dir: Path
) -> tuple[ProxyData, Tokenizer, dict[str, Any]]:
    """The proxy group's corpus and tokenizer as token streams, and what names them (`info`:
    part of the study's identity)."""
    corpus = load_corpus(
        proxy.corpus, max_mb=proxy.corpus_mb, heldout_fraction=proxy.heldout_fraction
    )
    tokenizer = load_tokenizer(proxy.tokenizer, corpus, proxy.vocab_size, cache_dir)
    tag = hashlib.sha256(f"{corpus.fingerprint}{tokenizer.to_str()}".encode()).hexdigest()[:16]
    data = ProxyData(
        train_ids=encode(tokenizer, corpus.train, cache_dir / f"train-{tag}.npy"),
        heldout_ids=encode(tokenizer, corpus.heldout, cache_dir / f"heldout-{tag}.npy"),
        token_bytes=token_bytes(tokenizer),
    )
    info = {
        "corpus": corpus.source,
        "corpus_fingerprint": corpus.fingerprint,
        "corpus_bytes": corpus.n_bytes,
        "vocab_size": tokenizer.get_vocab_size(),
        "train_tokens": len(data.train_ids),
        "heldout_tokens": len(data.heldout_ids),
    }
    return data, tokenizer, info
