"""Text, tokens and calibration batches — all offline, from files inside installed packages.

    qt.data.text("test")                          # a split as a string (train / valid / test / news)
    qt.data.tokens("test")                        # its token ids (int64), cached
    qt.data.tokens("test", tokenizer=tok)         # ... in another model's tokenizer (cached per tokenizer)
    qt.data.calibration(128, 256, source="wiki")  # 128 random windows of 256 tokens, seed-deterministic
    qt.data.split_sizes()                         # articles, characters and tokens per split
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qtutor.data.corpus import SPLITS, article_titles, cache_dir, text
from qtutor.data.tokenizer import encode, load_tokenizer, tokenizer_digest

SOURCES = {"wiki": "train", "news": "news"}


def tokens(split: str, tokenizer: Any = None) -> np.ndarray:
    """Token ids (int64) of a split, encoded by ``tokenizer`` (a transformers tokenizer; None: the embedded one)
    with no special tokens added. Cached on disk next to the text, keyed by a digest of the tokenizer, so that
    a foreign tokenizer (SmolLM2's) encodes the corpus once, not once per perplexity call."""
    if tokenizer is None or tokenizer is load_tokenizer():
        return _tokens(split, _tokenizer_digest(), encode)  # the key of the tokenizer file, as always
    return _tokens(split, tokenizer_digest(tokenizer), functools.partial(_encode_with, tokenizer))


_IN_MEMORY: dict[tuple[str, str], np.ndarray] = {}


def _tokens(split: str, digest: str, encoder: Callable[[str], np.ndarray]) -> np.ndarray:
    key = (split, digest)
    if key not in _IN_MEMORY:
        path = cache_dir() / f"{split}.{digest[:12]}.npy"
        if path.is_file():
            ids = np.load(path)
        else:
            ids = encoder(text(split))
            temporary = path.with_suffix(f".tmp{os.getpid()}.npy")  # renamed into place: never half a file
            np.save(temporary, ids)
            temporary.replace(path)
        _IN_MEMORY[key] = ids
    return _IN_MEMORY[key]


def _encode_with(tokenizer: Any, content: str) -> np.ndarray:
    # verbose=False: a corpus is longer than the model's context on purpose (it is cut into windows later)
    return np.asarray(tokenizer(content, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)


def _tokenizer_digest() -> str:
    import hashlib

    from qtutor.data.tokenizer import TOKENIZER_FILE

    return hashlib.sha256(Path(TOKENIZER_FILE).read_bytes()).hexdigest()


def calibration(n_samples: int = 128, seq_len: int = 256, source: str = "wiki", seed: int = 0,
                tokenizer: Any = None) -> np.ndarray:
    """``n_samples`` random windows of ``seq_len`` tokens (int64, n_samples x seq_len) from the wiki train split
    or the news text, as GPTQ's and AWQ's calibration sets are drawn. Deterministic for a given seed.
    ``tokenizer``: the model's own (None: the embedded one); the windows are cut from its ids of the text."""
    if source not in SOURCES:
        raise ValueError(f"unknown calibration source {source!r}; use one of: {', '.join(SOURCES)}")
    if n_samples < 1 or seq_len < 2:
        raise ValueError(f"n_samples={n_samples} and seq_len={seq_len} must be >= 1 and >= 2")
    stream = tokens(SOURCES[source], tokenizer)
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


__all__ = ["SPLITS", "calibration", "cache_dir", "encode", "load_tokenizer", "split_sizes", "text", "tokenizer_digest",
           "tokens"]
