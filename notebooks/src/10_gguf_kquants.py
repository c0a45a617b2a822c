# %% [markdown]
# # 10 · GGUF k-quants and export
#
# llama.cpp's files (`.gguf`) carry weights in ggml's **block types**. "Q4_K_M, the sweet spot" is a *mix*:
# most tensors in Q4_K, a few sensitive ones in Q6_K. This notebook opens one Q4_K super-block byte by byte,
# shows why the K-quants beat the older Q4_0 at the same size, recomputes llama.cpp's size table from its
# per-tensor rules, measures the mixes on the tiny model and writes a `.gguf` file llama.cpp can run.
#
# qtutor's quantizers are byte-identical to ggml's reference code (tested against ggml's own bytes and the
# `gguf` package), so everything below is what llama.cpp would store.

# %%
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.footprint import LLAMA_SHAPES, llama_tensor_shapes
from qtutor.eval.sweep import evaluate
from qtutor.methods import gguf
from qtutor.methods.gguf import anatomy, export, mixes
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
model, tokenizer = qt.load_model("tiny")

# %% [markdown]
# ## The block types
#
# | type | weights per block | bytes | bits/weight | recipe |
# |---|---|---|---|---|
# | Q4_0 | 32 | 18 | 4.5 | fp16 scale d; w = d (q − 8) |
# | Q8_0 | 32 | 34 | 8.5 | fp16 scale; w = d q |
# | Q4_K | 256 | 144 | 4.5 | fp16 d, dmin; 8 sub-blocks of 32 with 6-bit scale and min; w = d·sc·q − dmin·m |
# | Q6_K | 256 | 210 | 6.5625 | fp16 d; 16 sub-blocks of 16 with int8 scales; w = d·sc·(q − 32) |

# %% tags=["nbval-check-output"]
for name in gguf.TYPES:
    weights, size, bpw = gguf.block_info(name)
    print(f"{name:6s} {weights:4d} weights  {size:4d} bytes  {bpw:7.4f} bits/weight")

# %% [markdown]
# ## One Q4_K super-block, byte by byte
#
# The first 256 weights of a real layer, quantized to Q4_K: 2 + 2 bytes of fp16 super-scales, 12 bytes holding
# eight 6-bit scales and eight 6-bit minimums, 128 bytes of 4-bit codes.

# %%
W = qt.model.get_weight(qt.model.find_layer(model, "model.layers.2.mlp.up_proj"))
row = W[0, :256]
state = widgets.block_summary(row, "Q4_K", 70)
figures.block_bytes(state["roles"], state["bytes"], title="Q4_K: 144 bytes for 256 weights")
plt.show()
print(f"weight 70 (sub-block {state['sub_block']}): {state['formula']} = {state['value']:.5f}  (was {state['original']:.5f})")

# %% [markdown]
# ### Try it
# Pick a type and a weight; the title shows how that weight is rebuilt from its block.

# %% tags=["nbval-ignore-output"]
widgets.BlockAnatomy(row, "Q4_K", index=70)

# %% [markdown]
# ## Why K-quants beat Q4_0 at the same size
#
# Q4_0 and Q4_K both cost 4.5 bits per weight. Q4_0 spends its half bit on one fp16 scale per 32 weights,
# symmetric. Q4_K spends it on an *affine* code (scale and minimum) per 32 weights, stored in 6 bits each and
# chosen by a small least-squares search rather than by the block's max and min:

# %% tags=["nbval-check-output"]
all_weights = {layer.name: qt.model.get_weight(layer) for layer in qt.model.linear_layers(model)
               if layer.role != "lm_head"}
for name in ("Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"):
    errors = [np.mean((gguf.dequantize(gguf.quantize(w, name), name) - w) ** 2) / np.mean(w ** 2)
              for w in all_weights.values()]
    print(f"{name:5s} {gguf.block_info(name)[2]:6.4f} bits/weight   mean relative weight error {np.mean(errors):.5f}")

# %% [markdown]
# ## The mixes: which tensor gets which type
#
# llama.cpp's rules (``qtutor.methods.gguf.mixes``) give more bits to the output layer, to `attn_v` and to
# `ffn_down` in the first and last eighth of the layers and every third layer between. On a Llama-2-shaped
# model this reproduces llama.cpp's published sizes:

# %% tags=["nbval-check-output"]
print(f"{'mix':7s}" + "".join(f"{size:>16s}" for size in ("7B", "13B", "70B")))
for mix in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"):
    cells = []
    for size in ("7B", "13B", "70B"):
        shapes = llama_tensor_shapes(**LLAMA_SHAPES[size])
        bpw = mixes.mix_bits_per_weight(mix, shapes)
        gigabytes = sum(np.prod(s) for s in shapes.values()) * bpw / 8 / 1e9
        cells.append(f"{bpw:5.2f} b {gigabytes:6.2f} GB")
    print(f"{mix:7s}" + "".join(f"{c:>16s}" for c in cells))

# %% [markdown]
# (Q2_K is lower than the 3.35 bits llama.cpp published for it: its rules changed since, the others did not.)
# On the tiny model (6 layers, tied embedding), Q4_K_M puts these tensors in Q6_K:

# %% tags=["nbval-check-output"]
shapes = {export.gguf_name(name): tuple(p.shape) for name, p in model.named_parameters() if export.gguf_name(name)}
types = mixes.assign_types("Q4_K_M", shapes)
print(mixes.type_counts(types))
print([name for name, t in types.items() if t == "Q6_K"])

# %% [markdown]
# ## Perplexity against size: the mixes next to RTN
#
# Each mix quantizes every tensor llama.cpp would (the tied embedding included), measured on the first 4096
# test tokens (ctx 256, stride 128); RTN points quantize the linear layers only, at one format each.

# %%
TOKENS = 4096
baseline = evaluate(model, tokenizer, None, max_tokens=TOKENS)
points = []
for mix in ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"):
    points.append({"label": mix, "method": "GGUF mix",
                   **evaluate(model, tokenizer, "gguf", mix, max_tokens=TOKENS, baseline=baseline["ppl"])})
for fmt, group in (("int3", 128), ("int4", 128), ("int8", -1)):
    points.append({"label": f"{fmt} g{group}", "method": "RTN",
                   **evaluate(model, tokenizer, "rtn", fmt, group, max_tokens=TOKENS, baseline=baseline["ppl"])})
for p in points:
    print(f"{p['label']:9s} {p['bits_per_weight']:6.3f} bits/weight  perplexity {p['ppl']:8.2f} ({p['delta_pct']:+6.1f} %)")
figures.pareto(points, reference=baseline["ppl"], title="GGUF mixes and RTN on the tiny model")
plt.show()

# %% [markdown]
# ## Export a file llama.cpp can run
#
# `qtutor export-gguf --type Q4_K_M tiny.gguf` does the same from a terminal. The file holds the architecture's
# hyper-parameters, the tokenizer, and every tensor in its mix type; its size is the metadata plus the tensor
# bytes, each aligned to 32 bytes.

# %% tags=["nbval-check-output"]
with tempfile.TemporaryDirectory() as folder:
    summary = export.export_gguf(model, tokenizer, Path(folder) / "tiny-Q4_K_M.gguf", mix="Q4_K_M", progress=False)
print(f"{summary['tensor_bytes']:,} bytes of tensors, {summary['bits_per_weight']:.3f} bits per weight; "
      f"types {summary['counts']}")

# %% [markdown]
# ## What you learned
# * A K-quant super-block stores 256 weights with two fp16 scales and small integer scales per sub-block;
#   an affine sub-block code found by search beats Q4_0's max-scaled one at the same 4.5 bits.
# * "Q4_K_M" is a per-tensor recipe: more bits for the output, `attn_v` and `ffn_down` in chosen layers — about
#   4.84 bits per weight on a 7B model.
# * A `.gguf` is metadata + tokenizer + typed tensor bytes; qtutor writes one llama.cpp can load.
#
# Next: [13 · KV-cache quantization](13_kv_cache.ipynb).
