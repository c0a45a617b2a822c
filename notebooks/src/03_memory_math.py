# %% [markdown]
# # 03 · Memory math and footprints
#
# "Will it fit?" is the first question anyone asks about a model. The answer is one multiplication,
#
# $$\text{bytes} = \text{parameters} \times \frac{\text{bits per weight}}{8},$$
#
# and the whole lesson is in *bits per weight*: it must count what the format stores besides the codes —
# the scales, the zero points, the super-block scales of GGUF. Then comes what a table of weights forgets:
# the KV cache, which grows with the context.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval import footprint as fp
from qtutor.viz import figures

qt.setup_notebook(seed=0)

# %% [markdown]
# ## The table every local-LLM guide prints, recomputed
#
# GB = $10^9$ bytes, weights only. The GGUF columns are whole-model mixes (llama.cpp's per-tensor rules on a
# Llama-shaped 7B), the others one format for every weight.

# %% tags=["nbval-check-output"]
columns = ("fp16", "int8", "int4", "nf4", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
print(f"{'model':>6s} " + " ".join(f"{c:>7s}" for c in columns))
for row in fp.ram_table({"1B": 1e9, "7B": 7e9, "13B": 13e9, "70B": 70e9}, fmts=columns):
    print(f"{row['model']:>6s} " + " ".join(f"{row[c]:7.2f}" for c in columns))

# %% [markdown]
# ## Where the bytes of "4-bit" go
#
# "INT4" is never 4 bits per weight. With one float16 scale per group of 128 weights, each weight also pays
# 16/128 bits; an asymmetric grid adds a 4-bit zero point per group. Smaller groups cost more:

# %% tags=["nbval-check-output"]
rows = []
for group in (-1, 256, 128, 64, 32):
    for sym in (True, False):
        bpw = fp.bits_per_weight("int4", group, sym)
        label = f"g{group}" if group > 0 else "per channel"
        rows.append((f"{label} {'sym' if sym else 'asym'}", bpw))
        print(f"INT4 {label:12s} {'sym ' if sym else 'asym'}  {bpw:.4f} bits/weight   "
              f"7B: {fp.footprint(7e9, 'int4', group, sym).gb:.2f} GB")

# %%
names, values = zip(*rows)
figures.bar_chart(names, np.array(values) - 4, title="INT4: bits per weight beyond the 4 code bits",
                  ylabel="overhead (bits/weight)")
plt.show()

# %% [markdown]
# ### Exercise
# NF4 stores one float32 absmax per 64 weights. Double quantization stores those absmax values in 8 bits,
# plus one float32 per 256 of them. Compute both bits per weight by hand, then check with
# `qt.formats.get("nf4").encode(W, double_quant=True).bits_per_weight`.

# %% tags=["nbval-check-output"]
W = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
print("NF4                ", qt.formats.get("nf4").encode(W).bits_per_weight)
print("NF4 + double quant ", round(qt.formats.get("nf4").encode(W, double_quant=True).bits_per_weight, 4),
      "=", round(4 + 8 / 64 + 32 / (64 * 256), 4), "+ one fp32 mean")

# %% [markdown]
# ## The embedded model
#
# The course's model is small enough to train on a laptop: 6.2 M parameters, 5 M of them in the linear layers
# that quantization targets (the embedding is shared with the output head).

# %% tags=["nbval-check-output"]
model, tokenizer = qt.load_model("tiny")
linear = qt.model.linear_layers(model)
total = sum(p.numel() for p in model.parameters())
in_linears = sum(layer.shape[0] * layer.shape[1] for layer in linear if layer.role != "lm_head")
print(f"{total:,} parameters; {in_linears:,} in {len([l for l in linear if l.role != 'lm_head'])} linear layers")
for name in ("fp32", "bf16", "int8", "int4", "nf4", "Q4_K_M"):
    print(f"{name:7s} {fp.footprint(in_linears, name).bytes / 2**20:7.2f} MiB")

# %% [markdown]
# ## The KV cache: the memory that grows while you talk
#
# Each generated token stores a key and a value vector per layer and per KV head:
# $2 \times \text{layers} \times \text{kv heads} \times \text{head dim} \times \text{context}$ numbers.
# For Llama-2-7B (32 layers, 32 heads of 128) in FP16 that is 0.5 MB per token: at 32k tokens, 17 GB —
# four times the Q4_K_M weights. Grouped-query attention (fewer KV heads) and KV-cache quantization
# (notebook 13) are the two answers.

# %% tags=["nbval-check-output"]
weights_q4 = fp.footprint(6.74e9, "Q4_K_M").gb
for context in (2048, 8192, 32768):
    fp16 = fp.kv_cache_bytes(context) / 1e9
    int4 = fp.kv_cache_bytes(context, bits=4, group_size=64) / 1e9
    print(f"context {context:6d}:  KV cache FP16 {fp16:6.2f} GB   INT4 g64 {int4:5.2f} GB   (Q4_K_M weights {weights_q4:.2f} GB)")

# %%
contexts = np.array([512, 1024, 2048, 4096, 8192, 16384, 32768])
fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
ax.plot(contexts, [fp.kv_cache_bytes(c) / 1e9 for c in contexts], marker="o", label="KV cache, FP16")
ax.plot(contexts, [fp.kv_cache_bytes(c, bits=4, group_size=64) / 1e9 for c in contexts], marker="o",
        label="KV cache, INT4 g64")
ax.axhline(weights_q4, color="gray", linestyle="--", label="weights, Q4_K_M")
ax.set_xscale("log", base=2)
ax.set_xlabel("context (tokens)")
ax.set_ylabel("GB")
ax.set_title("Llama-2-7B: the KV cache outgrows 4-bit weights past ~8k tokens")
ax.legend()
plt.show()

# %% [markdown]
# ## What you learned
# * bytes = parameters × bits per weight / 8, where bits per weight includes scales and zero points:
#   INT4 g128 is 4.125–4.156, NF4 4.5 (4.127 with double quantization), Q4_K_M about 4.84.
# * Smaller groups buy accuracy with bits: per channel costs almost nothing, groups of 32 cost half a bit.
# * The KV cache grows with the context and, for long contexts, outweighs the quantized weights.
#
# Next: [04 · RTN on a real model](04_rtn_real_model.ipynb).
