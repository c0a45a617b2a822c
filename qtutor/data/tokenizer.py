"""The tokenizer of the embedded model: byte-level BPE with 4096 tokens, trained on the train split.

Byte-level BPE (as GPT-2's): text is read as UTF-8 bytes, so any string can be encoded; the 4096-token vocabulary
is the 256 bytes plus the most frequent merges learned from our Wikipedia train split. ``<|endoftext|>`` marks
document boundaries and doubles as padding.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILE = Path(__file__).resolve().parents[1] / "zoo" / "tokenizer.json"
VOCAB_SIZE = 4096
END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int = VOCAB_SIZE, path: Path = TOKENIZER_FILE) -> Path:
    """Train the byte-level BPE on ``text`` and save it (deterministic for the same text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.split("\n\n"), trainer=trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The embedded tokenizer as a ``transformers.PreTrainedTokenizerFast``."""
    from transformers import PreTrainedTokenizerFast

    if not TOKENIZER_FILE.is_file():
        raise FileNotFoundError(f"{TOKENIZER_FILE} is missing: reinstall qtutor, or train it with "
                                "`python -m qtutor.zoo.train tokenizer`")
    return PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_FILE), bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, pad_token=END_OF_TEXT, model_max_length=10**9)


def encode(text: str) -> np.ndarray:
    """Token ids of ``text`` (int64), with no special tokens added."""
    return np.asarray(load_tokenizer()(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 (hex) of what decides a tokenizer's ids, stable across processes: the key of its cached token ids.

    A fast tokenizer (every ``PreTrainedTokenizerFast``) is its ``tokenizers`` JSON: vocabulary, merges,
    normalizer, pre-tokenizer, added tokens. The padding and truncation settings are left out: transformers
    sets them anew from the arguments of every call, and ``tokens()`` encodes with neither.
    Any other tokenizer is keyed by its class, vocabulary, BPE merges (when it has them) and added tokens."""
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("padding", None)
        state.pop("truncation", None)
    else:
        ranks = getattr(tokenizer, "bpe_ranks", None) or {}
        state = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
                 "merges": [" ".join(pair) for pair, _ in sorted(ranks.items(), key=lambda item: item[1])],
                 "added": sorted(str(token) for token in getattr(tokenizer, "all_special_tokens", []))}
    return hashlib.sha256(json.dumps(state, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
