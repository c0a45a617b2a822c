"""Watch it break: greedy generation from one prompt, at float and at quantized variants, side by side.

    rows = side_by_side(model, tok, "The capital of France is", [
        {"label": "FP32", "method": None},
        {"label": "INT4 g64", "method": "rtn", "fmt": "int4", "group_size": 64},
        {"label": "INT2 g64", "method": "rtn", "fmt": "int2", "group_size": 64}])
    for row in rows:
        print(f"{row['label']:10s} {row['same_tokens_as_float']:3d}  {row['text']!r}")

Greedy decoding appends the most likely next token, t = argmax_v logits(v), again and again: no sampling, so a
model gives the same text every time and any difference between two models is their weights' doing.
Quantization moves every logit a little. The argmax stays put while the movement is smaller than the gap
between the top two logits, and flips to the runner-up once it is larger. A near tie flips first: a 4-bit model
may agree with the float one for a sentence and then pick " a" where float picked " the". From that token on
the two models continue *different* texts, so they never realign (except by chance): one flip and the rest of
the continuation diverges for good.

``same_tokens_as_float`` counts the leading generated tokens a variant shares with the float model: how far it
gets before its first flip. It is a coarse, honest measure (one sharp prompt, not an average over a corpus:
perplexity and KL divergence, in :mod:`qtutor.eval.perplexity` and :mod:`qtutor.eval.divergence`, are the
averages). A large count says no near tie on this prompt was close enough to flip; a count of 0 means the
very first token changed. A text that diverges can still be fluent: an early flip at a near tie is not damage,
while a late text of repeated or broken words is.
"""
from __future__ import annotations

import time
from typing import Any

VARIANT_KEYS = ("label", "method", "fmt", "group_size", "sym")


def prompt_ids(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int):
    """The prompt's token ids (1 x n, a torch tensor on the model's device), after checking that the prompt and
    ``max_new_tokens`` new tokens fit in the model's context."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: generate at least one token (an integer >= 1)")
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: give the model some text to continue")
    context = model.config.max_position_embeddings
    if ids.shape[1] + max_new_tokens > context:
        raise ValueError(f"the prompt is {ids.shape[1]} tokens long; with max_new_tokens={max_new_tokens} it may be "
                         f"at most {context - max_new_tokens} tokens (the model's context is {context} positions): "
                         f"shorten the prompt or ask for fewer new tokens")
    return ids.to(next(model.parameters()).device)


def greedy_tokens(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40,
                  stop_at_end: bool = True) -> list[int]:
    """The ids of the tokens greedy decoding appends to ``prompt``: at most ``max_new_tokens``, fewer if the model
    ends the text (its end-of-text token is then the last id). ``stop_at_end=False``: exactly ``max_new_tokens``
    (a decode-speed measurement must not stop early)."""
    import torch

    ids = prompt_ids(model, tokenizer, prompt, max_new_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    with torch.no_grad():
        # do_sample=False, one beam: each step appends argmax_v logits(v). generate keeps a KV cache (each step runs
        # only the newest token) across transformers versions; a plain loop without one gives the same ids, slower
        # (tests/test_generation.py checks it). generate also applies the model's generation_config: the tiny
        # model's and SmolLM2's set only token ids, no repetition penalty that would bend the argmax
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             min_new_tokens=None if stop_at_end else max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad)
    return out[0, ids.shape[1]:].tolist()


def greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 40) -> str:
    """The continuation of ``prompt`` by greedy decoding (the new text only, decoded): deterministic."""
    return tokenizer.decode(greedy_tokens(model, tokenizer, prompt, max_new_tokens), skip_special_tokens=True)


def leading_agreement(tokens: list[int], reference: list[int]) -> int:
    """How many leading tokens of ``tokens`` equal those of ``reference``."""
    count = 0
    for token, expected in zip(tokens, reference):
        if token != expected:
            break
        count += 1
    return count


def variant_label(variant: dict) -> str:
    """``variant["label"]``, or one made from its method, format and group size."""
    if variant.get("label"):
        return str(variant["label"])
    if variant.get("method") is None:
        return "float"
    group = variant.get("group_size", "default")
    group = {-1: "per channel", 0: "per tensor"}.get(group, f"g{group}")
    return f"{variant['method']} {variant.get('fmt', 'int4')} {group}"


def side_by_side(model: Any, tokenizer: Any, prompt: str, variants: list[dict], max_new_tokens: int = 40,
                 progress: bool = True, calib: Any = None) -> list[dict]:
    """Greedy continuations of ``prompt`` by ``model`` as it is and quantized as each variant says.

    A variant is ``{"label": "INT4 g64", "method": "rtn", "fmt": "int4", "group_size": 64}`` (``sym`` optional;
    ``method=None``: the float model). Each is applied with ``quantize_model`` as a context manager, so the
    weights are restored after it, even if it fails. ``calib``: calibration token ids for GPTQ and AWQ.

    One row per variant, in order: ``label``, ``text``, ``bits_per_weight`` (of the quantized layers; float: the
    model's dtype), ``same_tokens_as_float`` (leading generated tokens equal to the float model's), ``tokens``
    (the generated ids) and ``seconds`` (quantizing and generating).
    """
    import torch
    from tqdm.auto import tqdm

    from qtutor.model.quantize import quantize_model

    for variant in variants:
        unknown = set(variant) - set(VARIANT_KEYS)
        if unknown:
            raise ValueError(f"variant {variant!r} has unknown keys {sorted(unknown)}; a variant has "
                             f"{', '.join(VARIANT_KEYS)}")
    float_bits = torch.finfo(next(model.parameters()).dtype).bits
    started = time.time()
    reference = greedy_tokens(model, tokenizer, prompt, max_new_tokens)  # before any variant: checks the prompt too
    float_seconds = time.time() - started
    rows = []
    for variant in tqdm(variants, desc="generating", disable=not progress, leave=False):
        started = time.time()
        if variant.get("method") is None:
            tokens, bits = reference, float_bits
        else:
            with quantize_model(model, variant["method"], variant.get("fmt", "int4"),
                                variant.get("group_size", "default"), sym=variant.get("sym"), calib=calib,
                                progress=False) as report:
                tokens = greedy_tokens(model, tokenizer, prompt, max_new_tokens)
                bits = report.bits_per_weight
        rows.append({"label": variant_label(variant),
                     "text": tokenizer.decode(tokens, skip_special_tokens=True),
                     "bits_per_weight": float(bits),
                     "same_tokens_as_float": leading_agreement(tokens, reference),
                     "tokens": list(tokens),
                     "seconds": float_seconds if variant.get("method") is None else time.time() - started})
    return rows
