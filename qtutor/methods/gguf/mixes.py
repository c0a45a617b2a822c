"""The K-quant mixes (Q4_K_M and friends): which tensor of a model gets which block type.

"Q4_K_M" is not one type but a recipe: most weights in Q4_K, and a few tensors that hurt most when quantized
coarsely get more bits. The recipe of llama.cpp (``llama_tensor_get_type`` in ``src/llama-quant.cpp``),
for a dense Llama-like model whose layer i of n is "special" when

    use_more_bits(i, n) = i < n/8  or  i >= 7n/8  or  (i - n/8) % 3 == 2        (integer division)

(the first and last eighth of the layers, and every third layer in between):

    tensor           Q2_K   Q3_K_S  Q3_K_M            Q3_K_L  Q4_K_S       Q4_K_M           Q5_K_S  Q5_K_M           Q6_K
    output (*)       Q6_K   Q6_K    Q6_K              Q6_K    Q6_K         Q6_K             Q6_K    Q6_K             Q6_K
    attn_v           Q3_K   Q3_K    Q5_K i<2 / Q4_K   Q5_K    Q5_K i<4     Q6_K more_bits   Q5_K    Q6_K more_bits   Q6_K
    ffn_down         Q3_K   Q3_K    Q5_K i<n/16/Q4_K  Q5_K    Q5_K i<n/8   Q6_K more_bits   Q5_K    Q6_K more_bits   Q6_K
    attn_output      Q3_K   Q3_K    Q4_K              Q5_K    Q4_K         Q4_K             Q5_K    Q5_K             Q6_K
    everything else  Q2_K   Q3_K    Q3_K              Q3_K    Q4_K         Q4_K             Q5_K    Q5_K             Q6_K

(*) and the token embedding when it is tied to the output (no separate output.weight). One-dimensional
tensors (norms) stay F32. A tensor whose row length is not a multiple of 256 falls back to a legacy type
(``FALLBACK``), the output to Q8_0. Not modelled here: Falcon, mixture-of-experts and 70B-specific rules
(attn_v of a 70B GQA model goes up to Q5_K), the IQ types, and GQA-dependent Q2_K rules.
"""
from __future__ import annotations

import math
from typing import Iterable

from qtutor.formats.ggml.layouts import BLOCK, WEIGHTS_PER_BLOCK, bits_per_weight

# the mixes llama-quantize offers that qtutor reproduces, with their base type and llama.cpp's file type id
FTYPES = {"Q2_K": ("Q2_K", 10), "Q3_K_S": ("Q3_K", 11), "Q3_K_M": ("Q3_K", 12), "Q3_K_L": ("Q3_K", 13),
          "Q4_K_S": ("Q4_K", 14), "Q4_K_M": ("Q4_K", 15), "Q5_K_S": ("Q5_K", 16), "Q5_K_M": ("Q5_K", 17),
          "Q6_K": ("Q6_K", 18), "Q8_0": ("Q8_0", 7), "Q4_0": ("Q4_0", 2), "Q4_1": ("Q4_1", 3),
          "Q5_0": ("Q5_0", 8), "Q5_1": ("Q5_1", 9),
          # the float files llama.cpp's own quantizer takes as input: every 2-D tensor in that type
          "F32": ("F32", 0), "F16": ("F16", 1), "BF16": ("BF16", 32)}
FLOAT_TYPES = ("F32", "F16", "BF16")

# a K-type tensor whose rows are not a multiple of 256 (all of SmolLM2's but ffn_down: its rows are 576 long)
# gets a 32-block type instead (llama_tensor_get_type, "convert_incompatible_tensor"), and F16 if even that does
# not divide. Q2_K and Q3_K go to IQ4_NL (the non-linear 4-bit type: 4.5 bits, as Q4_0, with less error on
# bell-shaped weights; earlier llama.cpp versions used Q4_0), as today's llama.cpp does.
FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# llama.cpp's published bits per weight of the mixes (examples/quantize/README.md, 2024), Llama 2 7B / 13B / 70B.
# Q2_K's figure predates the current rules (it then kept more tensors in Q4_K); the others still hold.
PUBLISHED_BPW = {
    "7B": {"Q2_K": 3.35, "Q3_K_S": 3.50, "Q3_K_M": 3.91, "Q3_K_L": 4.27, "Q4_K_S": 4.58, "Q4_K_M": 4.84,
           "Q5_K_S": 5.52, "Q5_K_M": 5.68, "Q6_K": 6.56},
    "13B": {"Q2_K": 3.34, "Q3_K_S": 3.48, "Q3_K_M": 3.89, "Q3_K_L": 4.26, "Q4_K_S": 4.56, "Q4_K_M": 4.83,
            "Q5_K_S": 5.51, "Q5_K_M": 5.67, "Q6_K": 6.56},
    "70B": {"Q2_K": 3.40, "Q3_K_S": 3.47, "Q3_K_M": 3.85, "Q3_K_L": 4.19, "Q4_K_S": 4.53, "Q4_K_M": 4.80,
            "Q5_K_S": 5.50, "Q5_K_M": 5.65, "Q6_K": 6.56},
}


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def check_mix(mix: str) -> str:
    key = str(mix).upper()
    if key not in FTYPES:
        raise ValueError(f"unknown mix {mix!r}; the mixes are: {', '.join(FTYPES)}")
    return key


def layer_type(mix: str, kind: str, i: int, n: int) -> str:
    """Block type of tensor ``kind`` (attn_q, attn_v, ffn_down, output, ...) of layer ``i`` of ``n``."""
    mix = check_mix(mix)
    base = FTYPES[mix][0]
    if base in FLOAT_TYPES:
        return base
    if kind == "output":
        return "Q8_0" if base == "Q8_0" else "Q6_K"  # every mix but Q8_0, the legacy ones included
    rules = {
        "attn_v": {"Q2_K": "Q3_K", "Q3_K_M": "Q5_K" if i < 2 else "Q4_K", "Q3_K_L": "Q5_K",
                   "Q4_K_S": "Q5_K" if i < 4 else None,
                   "Q4_K_M": "Q6_K" if use_more_bits(i, n) else None,
                   "Q5_K_M": "Q6_K" if use_more_bits(i, n) else None},
        "ffn_down": {"Q2_K": "Q3_K", "Q3_K_M": "Q5_K" if i < n // 16 else "Q4_K", "Q3_K_L": "Q5_K",
                     "Q4_K_S": "Q5_K" if i < n // 8 else None,
                     "Q4_K_M": "Q6_K" if use_more_bits(i, n) else None,
                     "Q5_K_M": "Q6_K" if use_more_bits(i, n) else None},
        "attn_output": {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"},
    }
    return rules.get(kind, {}).get(mix) or base


def tensor_kind(name: str) -> tuple[str, int]:
    """(kind, layer index) of a GGUF tensor name: ``blk.3.ffn_down.weight`` -> ("ffn_down", 3)."""
    parts = name.split(".")
    if parts[0] == "blk":
        return parts[2], int(parts[1])
    return parts[0], -1


def assign_types(mix: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """GGUF tensor name -> block type ("F32" for 1-D tensors) under ``mix``, fallbacks applied."""
    mix = check_mix(mix)
    n_layers = 1 + max((tensor_kind(name)[1] for name in shapes), default=0)
    tied = "output.weight" not in shapes
    types = {}
    for name, shape in shapes.items():
        kind, i = tensor_kind(name)
        if len(shape) < 2:
            types[name] = "F32"
            continue
        if FTYPES[mix][0] in FLOAT_TYPES:
            types[name] = FTYPES[mix][0]
            continue
        if kind == "output" or (tied and kind == "token_embd"):
            chosen = layer_type(mix, "output", i, n_layers)
            if shape[-1] % WEIGHTS_PER_BLOCK.get(chosen, 1):
                chosen = "Q8_0"
        else:
            chosen = layer_type(mix, kind, i, n_layers)
        if chosen in BLOCK and shape[-1] % WEIGHTS_PER_BLOCK[chosen]:
            chosen = FALLBACK.get(chosen, "F16")
            if chosen in BLOCK and shape[-1] % WEIGHTS_PER_BLOCK[chosen]:
                chosen = "F16"
        types[name] = chosen
    return types


def type_bits(type_name: str) -> float:
    return {"F32": 32.0, "F16": 16.0, "BF16": 16.0}.get(type_name) or bits_per_weight(type_name)


def mix_bits_per_weight(mix: str, shapes: dict[str, tuple[int, ...]]) -> float:
    """Bits per weight of a whole model under ``mix`` (every tensor, norms and embeddings included)."""
    types = assign_types(mix, shapes)
    bits = sum(math.prod(shape) * type_bits(types[name]) for name, shape in shapes.items())
    return bits / sum(math.prod(shape) for shape in shapes.values())


def type_counts(types: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for type_name in types.values():
        counts[type_name] = counts.get(type_name, 0) + 1
    return counts


def mixes() -> Iterable[str]:
    return list(FTYPES)
