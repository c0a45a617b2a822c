"""Text, tokens and calibration batches — all offline, from files inside installed packages.

    qt.data.text("test")                          # a split as a string (train / valid / test / news)
    qt.data.tokens("test")                        # its token ids (int64), cached
    qt.data.calibration(128, 256, source="wiki")  # 128 random windows of 256 tokens, seed-deterministic
    qt.data.split_sizes()                         # articles, characters and tokens per split
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from qtutor.data.corpus import SPLITS, article_titles, cache_dir, text
from qtutor.data.tokenizer import encode, load_tokenizer

SOURCES = {"wiki": "train", "news": "news"}


def tokens(split: str) -> np.ndarray:
    """Token ids of a split (cached on disk next to the text, keyed by the tokenizer file's hash)."""
    return _tokens(split, _tokenizer_digest())


@functools.lru_cache(maxsize=None)
def _tokens(split: str, digest: str) -> np.ndarray:
    path = cache_dir() / f"{split}.{digest[:12]}.npy"
    if path.is_file():
        return np.load(path)
    ids = encode(text(split))
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, ids)
    temporary.replace(path)
    return ids


def _tokenizer_digest() -> str:
    import hashlib

    from qtutor.data.tokenizer import TOKENIZER_FILE

    return hashlib.sha256(Path(TOKENIZER_FILE).read_bytes()).hexdigest()


def calibration(n_samples: int = 128, seq_len: int = 256, source: str = "wiki", seed: int = 0) -> np.ndarray:
    """``n_samples`` random windows of ``seq_len`` tokens (int64, n_samples x seq_len) from the wiki train split
    or the news text, as GPTQ's and AWQ's calibration sets are drawn. Deterministic for a given seed."""
    if source not in SOURCES:
        raise ValueError(f"unknown calibration source {source!r}; use one of: {', '.join(SOURCES)}")
    if n_samples < 1 or seq_len < 2:
        raise ValueError(f"n_samples={n_samples} and seq_len={seq_len} must be >= 1 and >= 2")
    stream = tokens(SOURCES[source])
    if seq_len >= len(stream):
        raise ValueError(f"seq_len={seq_len} is longer than the {source} text ({len(stream)} tokens); "
                         f"use seq_len < {len(stream)}")
    if n_samples * seq_len > len(stream):
        raise ValueError(f"{n_samples} x {seq_len} = {n_samples * seq_len} tokens asked for, but the {source} text "
                         f"has {len(stream)}; lower n_samples to at most {len(stream) // seq_len}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(stream) - seq_len, size=n_samples)
    return np.stack([stream[start:start + seq_len] for start in starts])


def split_sizes() -> dict[str, dict[str, int]]:
    """Articles, characters and tokens of every split."""
    sizes = {}
    for split in SPLITS:
        sizes[split] = {"articles": len(article_titles(split)) if split != "news" else 0,
                        "characters": len(text(split)), "tokens": int(len(tokens(split)))}
    return sizes


__all__ = ["SPLITS", "calibration", "cache_dir", "encode", "load_tokenizer", "split_sizes", "text", "tokens"]
