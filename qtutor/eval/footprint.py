"""Memory arithmetic: how many bytes a model takes in a format, and where they go.

The rule of thumb is  bytes = parameters x bits per weight / 8.  The whole lesson is in "bits per weight":
it must count the scales and zero points, not only the codes. A 4-bit format with one float16 scale per 128
weights costs 4 + 16/128 = 4.125 bits; with a zero point too, 4.156; NF4 with a float32 absmax per 64 weights,
4.5; GGUF's Q4_K_M mixes 4- and 6-bit blocks to about 4.84 on a 7B Llama.

    70e9 parameters x 16 bits / 8 = 140 GB          (FP16: the weights alone)
    70e9 parameters x 4.125 bits / 8 = 36.1 GB      (INT4, groups of 128)

Weights are not all: serving also holds the KV cache, 2 (K and V) x layers x kv_heads x head_dim x context x
batch x bytes per element, which grows with the context and can outgrow the quantized weights.

GB here means 10^9 bytes (what model cards and download pages print); GiB = 2^30 bytes is also reported.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
GIB = 2**30


@dataclass(frozen=True)
class Footprint:
    parameters: float
    format: str
    bits_per_weight: float

    @property
    def bytes(self) -> float:
        return self.parameters * self.bits_per_weight / 8

    @property
    def gb(self) -> float:
        return self.bytes / GB

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def as_dict(self) -> dict:
        return {"parameters": self.parameters, "format": self.format, "bits_per_weight": self.bits_per_weight,
                "bytes": self.bytes, "gb": self.gb, "gib": self.gib}


# the shapes of a few well-known models (Llama-2 for 7B/13B/70B), for formats whose cost depends on shapes
LLAMA_SHAPES = {
    "7B": dict(n_layers=32, hidden=4096, intermediate=11008, vocab=32000, n_heads=32, n_kv_heads=32),
    "13B": dict(n_layers=40, hidden=5120, intermediate=13824, vocab=32000, n_heads=40, n_kv_heads=40),
    "70B": dict(n_layers=80, hidden=8192, intermediate=28672, vocab=32000, n_heads=64, n_kv_heads=8),
}


def llama_tensor_shapes(n_layers: int, hidden: int, intermediate: int, vocab: int, n_heads: int,
                        n_kv_heads: int) -> dict[str, tuple[int, ...]]:
    """Every weight of a Llama-shaped model, with GGUF tensor names and shapes (out_features, in_features)."""
    head_dim = hidden // n_heads
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,),
                                          "output.weight": (vocab, hidden)}
    for i in range(n_layers):
        block = f"blk.{i}."
        shapes.update({
            block + "attn_norm.weight": (hidden,),
            block + "attn_q.weight": (hidden, hidden),
            block + "attn_k.weight": (n_kv_heads * head_dim, hidden),
            block + "attn_v.weight": (n_kv_heads * head_dim, hidden),
            block + "attn_output.weight": (hidden, hidden),
            block + "ffn_norm.weight": (hidden,),
            block + "ffn_gate.weight": (intermediate, hidden),
            block + "ffn_up.weight": (intermediate, hidden),
            block + "ffn_down.weight": (hidden, intermediate),
        })
    return shapes


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes.values():
        count = 1
        for n in shape:
            count *= n
        total += count
    return total


def bits_per_weight(fmt: str, group_size: int | None | str = "default", sym: bool | None = None,
                    shape: tuple[int, int] = (4096, 4096)) -> float:
    """Bits per weight of a qtutor format (``"int4"``, ``"nf4"``, ``"fp16"``, ...) or a GGUF type / mix
    (``"Q4_0"``, ``"Q4_K"``, ``"Q4_K_M"``), scales and zero points included. ``"fp32"`` is 32."""
    from qtutor import formats

    name = str(fmt)
    if name.lower() == "fp32":
        return 32.0
    if name.lower() in formats.names() + formats.block_types():  # a format, ggml's block types included
        f = formats.get(name)
        if group_size == "default":
            group_size = f.weight_group_size
        return f.bits_per_weight(shape, group_size=group_size, sym=sym)
    from qtutor.methods.gguf import mixes

    if name.upper() in mixes.FTYPES:
        return mixes.mix_bits_per_weight(name.upper(), llama_tensor_shapes(**LLAMA_SHAPES["7B"]))
    raise ValueError(f"unknown format {fmt!r}: use a qtutor format ({', '.join(formats.names())}), fp32, "
                     "or a GGUF type / mix such as Q4_0, Q4_K, Q4_K_M")


def footprint(parameters: float, fmt: str = "fp16", group_size: int | None | str = "default",
              sym: bool | None = None) -> Footprint:
    """Bytes of ``parameters`` weights stored in ``fmt``: ``footprint(70e9, "fp16").gb == 140.0``."""
    if parameters <= 0:
        raise ValueError(f"parameters={parameters} must be positive (e.g. 7e9 for a 7B model)")
    return Footprint(float(parameters), str(fmt), bits_per_weight(fmt, group_size, sym))


def kv_cache_bytes(context: int, n_layers: int = 32, n_kv_heads: int = 32, head_dim: int = 128, batch: int = 1,
                   bits: float = 16.0, group_size: int | None = None, scale_bits: int = 16) -> float:
    """Bytes of the KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x batch elements, each at
    ``bits``, plus one ``scale_bits`` scale per ``group_size`` elements when the cache is quantized in groups."""
    elements = 2 * n_layers * n_kv_heads * head_dim * context * batch
    overhead = 0.0 if not group_size else scale_bits / group_size
    return elements * (bits + overhead) / 8


def ram_table(models: dict[str, float] | None = None, fmts: tuple[str, ...] = (
        "fp32", "fp16", "int8", "int4", "nf4", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")) -> list[dict]:
    """Rows of GB per model size and format: the memory table every local-LLM guide prints, recomputed."""
    models = models or {"1B": 1e9, "3B": 3e9, "7B": 7e9, "8B": 8e9, "13B": 13e9, "34B": 34e9, "70B": 70e9}
    rows = []
    for name, parameters in models.items():
        row: dict = {"model": name}
        for fmt in fmts:
            row[fmt] = round(footprint(parameters, fmt).gb, 2)
        rows.append(row)
    return rows
