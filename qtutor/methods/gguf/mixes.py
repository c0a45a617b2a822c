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
tensors (norms) stay F32. A tensor whose row length is not a multiple of 256 falls back to a 32-weight type
(``FALLBACK``), the output to Q8_0.

The i-quant and ternary mixes (llama.cpp's file types of the same names; the base type in brackets):

    tensor        IQ1_S/M   IQ2_XXS/XS        IQ2_S [IQ2_XS], IQ2_M [IQ2_S]   IQ3_XXS (**)   IQ3_XS [IQ3_S]   IQ3_M [IQ3_S]
    output        Q5_K      Q5_K              Q5_K                            Q5_K           Q6_K             Q6_K
    attn_v        Q2_K      Q2_K              IQ3_S                           IQ3_XXS        -                Q4_K
    ffn_down      Q2_K i<n/8  Q2_K i<n/8      IQ3_S i<n/8                     -              -                Q4_K i<n/8
    attn_output   IQ2_XXS   -                 IQ3_S                           IQ3_S          -                Q4_K
    attn_q, attn_k  -       -                 -                               IQ2_S          IQ3_XXS          -
    ffn_gate, ffn_up  -     -                 -                               -              IQ3_XXS n/8<=i<7n/8  -

(-: the base type.) IQ3_S, IQ4_NL and IQ4_XS keep their base type everywhere but the output (Q6_K); IQ4_NL/XS
give the first eighth of ffn_down Q5_K when no importance matrix is used, and TQ1_0/TQ2_0 an untied token
embedding Q4_K. (**) Without an importance matrix IQ3_XXS's attn_v is IQ3_S and its ffn_down Q3_K (Q4_K in the
first eighth); with one, Q4_0 and Q5_0 give the first eighth of ffn_down Q4_1 / Q5_1. A model whose K/V heads
are shared by 4 or more query heads (n_gqa >= 4) gets more in attn_v: Q4_K (Q2_K, the IQ1/IQ2/IQ3 mixes), Q5_K
(IQ4_NL/XS). llama.cpp refuses to write IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S or IQ3_XXS tensors without an
importance matrix (``REQUIRES_IMATRIX``, ``check_imatrix_needed``): at these sizes the weighting is what makes
the model usable.

The rules follow ``llama_tensor_get_type_impl`` of src/llama-quant.cpp (llama.cpp at 007dbbf3) for dense
models. Not modelled: Falcon, mixture-of-experts and 70B-specific rules (attn_v of a 70B GQA model goes up to
Q5_K), Q2_K_S, MXFP4_MOE.
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
          "IQ2_XXS": ("IQ2_XXS", 19), "IQ2_XS": ("IQ2_XS", 20), "IQ3_XS": ("IQ3_S", 22), "IQ3_XXS": ("IQ3_XXS", 23),
          "IQ1_S": ("IQ1_S", 24), "IQ4_NL": ("IQ4_NL", 25), "IQ3_S": ("IQ3_S", 26), "IQ3_M": ("IQ3_S", 27),
          "IQ2_S": ("IQ2_XS", 28), "IQ2_M": ("IQ2_S", 29), "IQ4_XS": ("IQ4_XS", 30), "IQ1_M": ("IQ1_M", 31),
          "TQ1_0": ("TQ1_0", 36), "TQ2_0": ("TQ2_0", 37),
          # the float files llama.cpp's own quantizer takes as input: every 2-D tensor in that type
          "F32": ("F32", 0), "F16": ("F16", 1), "BF16": ("BF16", 32)}
FLOAT_TYPES = ("F32", "F16", "BF16")

# a K-type tensor whose rows are not a multiple of 256 (all of SmolLM2's but ffn_down: its rows are 576 long)
# gets a 32-block type instead (tensor_type_fallback), and F16 if even that does not divide: Q2_K, Q3_K and the
# ternary types go to Q4_0, the i-quants to IQ4_NL (the non-linear 4-bit type: Q4_0's 4.5 bits with less error on
# bell-shaped weights). Checked by running llama.cpp's own quantizer on SmolLM2 (tools/llamacpp_quantize.py);
# llama.cpp versions of 2024-2025 sent Q2_K and Q3_K to IQ4_NL too.
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
            "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
            "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0"}

# the tensor types llama.cpp will not write without an importance matrix (tensor_requires_imatrix; the output
# and token embedding are exempt)
REQUIRES_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS")

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


LOW_BIT = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M")  # the mixes with their own rule block


def layer_type(mix: str, kind: str, i: int, n: int, n_gqa: int = 1, imatrix: bool = False) -> str:
    """Block type of tensor ``kind`` (attn_q, attn_v, ffn_down, output, ...) of layer ``i`` of ``n``, before the
    fallback for row lengths; ``n_gqa`` query heads per K/V head, ``imatrix`` whether one is used."""
    mix = check_mix(mix)
    base = FTYPES[mix][0]
    if base in FLOAT_TYPES:
        return base
    if kind == "output":
        if base == "Q8_0":
            return "Q8_0"
        return "Q5_K" if mix in (*LOW_BIT, "IQ3_XXS") else "Q6_K"
    if kind == "token_embd":  # an untied embedding (a tied one follows the output)
        return {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K", "IQ2_S": "IQ3_S",
                "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S", "TQ1_0": "Q4_K", "TQ2_0": "Q4_K"}.get(mix, base)
    if mix in LOW_BIT:
        two_s = mix in ("IQ2_S", "IQ2_M")
        if kind == "attn_v":
            return "Q4_K" if n_gqa >= 4 else "IQ3_S" if two_s else "Q2_K"
        if kind == "ffn_down" and i < n // 8:
            return "IQ3_S" if two_s else "Q2_K"
        if kind == "attn_output":
            return {"IQ1_S": "IQ2_XXS", "IQ1_M": "IQ2_XXS", "IQ2_S": "IQ3_S", "IQ2_M": "IQ3_S"}.get(mix, base)
        return base
    more_bits = use_more_bits(i, n)
    if kind == "attn_v":
        rule = {"Q2_K": "Q4_K" if n_gqa >= 4 else "Q3_K",
                "IQ3_XXS": "Q4_K" if n_gqa >= 4 else "IQ3_XXS" if imatrix else "IQ3_S",
                "IQ3_XS": "Q4_K" if n_gqa >= 4 else None, "IQ3_S": "Q4_K" if n_gqa >= 4 else None,
                "IQ3_M": "Q4_K", "Q3_K_M": "Q5_K" if i < 2 else "Q4_K", "Q3_K_L": "Q5_K",
                "IQ4_NL": "Q5_K" if n_gqa >= 4 else None, "IQ4_XS": "Q5_K" if n_gqa >= 4 else None,
                "Q4_K_M": "Q6_K" if more_bits else None, "Q5_K_M": "Q6_K" if more_bits else None,
                "Q4_K_S": "Q5_K" if i < 4 else None}
    elif kind in ("attn_q", "attn_k"):
        rule = {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}
    elif kind == "ffn_down":
        first = i < n // 8
        rule = {"Q2_K": "Q3_K", "IQ3_XXS": None if imatrix else "Q4_K" if first else "Q3_K",
                "Q3_K_M": "Q5_K" if i < n // 16 else "Q4_K", "IQ3_M": "Q4_K" if first else None,
                "Q3_K_L": "Q5_K", "Q4_K_M": "Q6_K" if more_bits else None,
                "IQ4_NL": "Q5_K" if first and not imatrix else None, "IQ4_XS": "Q5_K" if first and not imatrix else None,
                "Q5_K_M": "Q6_K" if more_bits else None, "Q4_K_S": "Q5_K" if first else None,
                "Q4_0": "Q4_1" if first and imatrix else None, "Q5_0": "Q5_1" if first and imatrix else None}
    elif kind == "attn_output":
        rule = {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K", "IQ3_M": "Q4_K"}
    elif kind in ("ffn_gate", "ffn_up"):
        rule = {"IQ3_XS": "IQ3_XXS" if n // 8 <= i < 7 * n // 8 else None}
    else:
        rule = {}
    return rule.get(mix) or base


def tensor_kind(name: str) -> tuple[str, int]:
    """(kind, layer index) of a GGUF tensor name: ``blk.3.ffn_down.weight`` -> ("ffn_down", 3)."""
    parts = name.split(".")
    if parts[0] == "blk":
        return parts[2], int(parts[1])
    return parts[0], -1


def query_heads_per_kv_head(shapes: dict[str, tuple[int, ...]]) -> int:
    """n_gqa of a model from its tensor shapes: rows of attn_q over rows of attn_k (the same head size)."""
    q, k = shapes.get("blk.0.attn_q.weight"), shapes.get("blk.0.attn_k.weight")
    return max(1, q[0] // k[0]) if q is not None and k is not None and k[0] else 1


def assign_types(mix: str, shapes: dict[str, tuple[int, ...]], imatrix: bool = False) -> dict[str, str]:
    """GGUF tensor name -> block type ("F32" for 1-D tensors) under ``mix``, fallbacks applied; ``imatrix``:
    whether the tensors will be weighted by an importance matrix (a few rules depend on it)."""
    mix = check_mix(mix)
    n_layers = 1 + max((tensor_kind(name)[1] for name in shapes), default=0)
    n_gqa = query_heads_per_kv_head(shapes)
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
            base = FTYPES[mix][0]
            chosen = "Q8_0" if shape[-1] % WEIGHTS_PER_BLOCK[base] else layer_type(mix, "output", i, n_layers)
        else:
            chosen = layer_type(mix, kind, i, n_layers, n_gqa, imatrix)
        if chosen in BLOCK and shape[-1] % WEIGHTS_PER_BLOCK[chosen]:
            chosen = FALLBACK.get(chosen, "F16")
            if chosen in BLOCK and shape[-1] % WEIGHTS_PER_BLOCK[chosen]:
                chosen = "F16"
        types[name] = chosen
    return types


def needing_imatrix(types: dict[str, str]) -> list[str]:
    """The tensors llama.cpp would refuse to write without an importance matrix (their type needs one)."""
    return [name for name, type_name in types.items()
            if type_name in REQUIRES_IMATRIX and name not in ("output.weight", "token_embd.weight")]


def check_imatrix_needed(mix: str, types: dict[str, str], imatrix: object) -> None:
    """llama-quantize's refusal: an IQ1/IQ2 (or IQ3_XXS) tensor without an importance matrix is an error."""
    needing = needing_imatrix(types)
    if imatrix is None and needing:
        raise ValueError(f"the {mix} mix needs an importance matrix: {len(needing)} tensors (e.g. {needing[0]}, "
                         f"{types[needing[0]]}) are types that llama.cpp refuses to make without one, because at "
                         f"these sizes unweighted rounding ruins the model. Compute one on calibration text "
                         f"(`qtutor imatrix --model M imatrix.gguf`, or qt.model.imatrix.collect(model, calib)) "
                         f"and pass it (--imatrix imatrix.gguf / imatrix=)")


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
