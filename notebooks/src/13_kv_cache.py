# %% [markdown]
# # 13 · KV-cache quantization
#
# The notebooks so far shrank the weights. A model that generates text also stores, in every attention layer,
# the key $k_t$ and value $v_t$ of every token it has seen, so that token $t+1$ can attend to them without
# recomputing them. This store, the **KV cache**, grows with the context; at long context it outweighs the
# 4-bit weights. This notebook asks how many bits it needs and along which axis its scales should run.
#
# *The other half of notebook 13, quantization-aware training (QAT, LLM-QAT), is not written yet; it comes
# with the QAT work.*

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval import footprint as fp
from qtutor.methods.kv_cache import fake_quantize, kv_bits_per_element
from qtutor.model.activations import quantized_kv_cache

qt.setup_notebook(seed=0)
model, tokenizer = qt.load_model("tiny")
TOKENS = 4096  # the first 4096 test tokens (ctx 256, stride 128) per perplexity: a few seconds each

# %% [markdown]
# ## Why the cache matters
#
# Each layer caches one key and one value vector per KV head and per token, so a batch of $B$ sequences of
# $T$ tokens holds
#
# $$\text{bytes} = 2 \times L \times H_{kv} \times d_{\text{head}} \times T \times B \times \frac{b}{8},$$
#
# with $L$ layers, $H_{kv}$ KV heads of $d_{\text{head}}$ channels and $b$ bits per cached number, scales
# included. For a Llama-2-7B shape ($L = 32$, $H_{kv} = 32$, $d_{\text{head}} = 128$) the cache is
# $2 \cdot 32 \cdot 32 \cdot 128 = 262\,144$ numbers per token. Below, the quantized caches carry one float16
# scale and one zero point per token and head (a group of 128 numbers); the weights beside them are INT4 with
# groups of 128.

# %% tags=["nbval-check-output"]
shape_7b = fp.LLAMA_SHAPES["7B"]
head_dim_7b = shape_7b["hidden"] // shape_7b["n_heads"]
weights_int4 = fp.footprint(fp.parameter_count(fp.llama_tensor_shapes(**shape_7b)), "int4", 128).gb
cache_bits = {"FP16": 16.0, "INT8": kv_bits_per_element("int8", 128), "INT4": kv_bits_per_element("int4", 128),
              "INT2": kv_bits_per_element("int2", 128)}
contexts = {"2k": 2048, "32k": 32768, "128k": 131072}
cache_gb = {name: {label: fp.kv_cache_bytes(T, n_layers=shape_7b["n_layers"], n_kv_heads=shape_7b["n_kv_heads"],
                                            head_dim=head_dim_7b, batch=1, bits=bits) / fp.GB
                   for label, T in contexts.items()} for name, bits in cache_bits.items()}
print(f"7B-shaped model, batch 1; weights at INT4 g128: {weights_int4:.2f} GB")
print("cache   bits/number " + "".join(f"{label:>10s}" for label in contexts))
for name, bits in cache_bits.items():
    print(f"{name:6s} {bits:11.3f}  " + "".join(f"{cache_gb[name][label]:7.2f} GB" for label in contexts))

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.6), constrained_layout=True)
width = 0.2
for i, name in enumerate(cache_bits):
    ax.bar(np.arange(len(contexts)) + (i - 1.5) * width, [cache_gb[name][label] for label in contexts], width,
           label=f"KV cache, {name}")
ax.axhline(weights_int4, color="gray", linestyle="--", label="weights, INT4 g128")
ax.set_xticks(range(len(contexts)))
ax.set_xticklabels([f"{label} tokens" for label in contexts])
ax.set_yscale("log")
ax.set_ylabel("GB")
ax.set_title("7B-shaped model, one sequence: KV cache against 4-bit weights")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At 2k tokens the FP16 cache is a third of the 4-bit weights; at 32k it is about five times their size, and
# at 128k about twenty times — for a single sequence. Every halving of the bits halves the cache, and the
# scales barely change that (a 16-bit scale and a zero point per 128 numbers add 0.14–0.19 bits);
# and a batch of $B$ sequences multiplies it by $B$. Grouped-query attention, which shares each KV head among
# several query heads, divides it by the sharing factor (exercise 2).
#
# ## Which axis gets the scale
#
# The keys of one attention head form a matrix $K \in \mathbb{R}^{T \times d}$: a row per token, a column per
# channel. A scale can run along either axis:
#
# * **per token** (LLM-QAT, Liu et al. 2023, arXiv:2305.17888): $s_t = \max_j |K_{tj}| / q_{\max}$, one per
#   row. A token is quantized once, when it arrives: natural for a cache that grows.
# * **per channel** (KIVI, Liu et al. 2024, arXiv:2402.02750): $s_j = \max_t |K_{tj}| / q_{\max}$, one per
#   column over a chunk of tokens. KIVI found that in large models a few *key* channels are large in every
#   token, so they set every per-token scale and crush the other channels; a per-channel scale isolates them.
#   Values show no such channels and stay per token — and an error in a value is averaged by the attention
#   weights, while an error in a key moves the attention weights themselves.
#
# The argument rests on a measurement, so measure it here. `qt.model.capture_calls` records what each block's
# `k_proj` and `v_proj` return on 4 calibration sequences of 256 tokens; split into heads:

# %%
def split_heads(y, head_dim):
    """(sequences, tokens, heads x head_dim) -> (sequences, heads, tokens, head_dim)"""
    y = y.float().numpy()
    return y.reshape(*y.shape[:2], -1, head_dim).transpose(0, 2, 1, 3)


calib = qt.data.calibration(4, 256)
n_blocks = model.config.num_hidden_layers
names = {(block, kind): f"model.layers.{block}.self_attn.{kind}_proj" for block in range(n_blocks) for kind in "kv"}
calls = qt.model.capture_calls(model, calib, names.values(), batch_size=4)  # one call per module: all 4 sequences
kv = {key: split_heads(calls[name][0][2], model.config.head_dim) for key, name in names.items()}  # [2]: output
print("keys of block 0:", kv[0, "k"].shape, "(sequences, heads, tokens, head_dim)")

# %% [markdown]
# Each channel's peak $\max_t |x_{tj}|$ over all tokens, for the 4 heads × 64 channels of one block, keys
# against values:

# %%
def channel_peaks(x):
    return np.abs(x).max(axis=(0, 2)).ravel()  # one peak per (head, channel)


fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), constrained_layout=True, sharey=True)
for ax, kind, title in zip(axes, ("k", "v"), ("keys (k_proj)", "values (v_proj)")):
    peaks = channel_peaks(kv[1, kind])
    ax.bar(range(peaks.size), peaks, width=1.0, color="C0" if kind == "k" else "C1")
    ax.set_title(f"block 1, {title}: max |x| per channel")
    ax.set_xlabel("channel (head × 64 + channel)")
axes[0].set_ylabel("max |x| over 1024 tokens")
plt.show()

# %%
print("block   keys: max/median channel peak   values: max/median channel peak")
peak_ratios = []
for block in range(n_blocks):
    ratios = [channel_peaks(kv[block, kind]).max() / np.median(channel_peaks(kv[block, kind])) for kind in "kv"]
    peak_ratios.append(ratios)
    print(f"{block:5d} {ratios[0]:21.2f} {ratios[1]:33.2f}")

# %% tags=["nbval-check-output"]
claim = qt.notebook.claim
claim("in every block the key channels are more uneven than the value channels",
      all(keys > values for keys, values in peak_ratios))
claim("but mildly: no key channel peaks above 5 times the median", all(keys < 5 for keys, _ in peak_ratios))

# %% [markdown]
# The tiny model shows KIVI's pattern, but mildly. Its key channels are uneven — the largest peaks at 2–3.5
# times the median channel's — while its value channels are nearly uniform (about 1.5–1.8). Large models
# report key channels ten times the median or more; there is nothing that extreme here, so expect a small
# effect.
#
# Now the error itself: fake-quantize the real keys and values along each axis (asymmetric, one scale and zero
# point per token and head, or per channel over each 256-token sequence) and measure the relative error
# $\|\hat X - X\|_F / \|X\|_F$, averaged over the 6 blocks.

# %%
def relative_error(x, fmt, axis):
    return float(np.linalg.norm(fake_quantize(x, fmt, axis=axis) - x) / np.linalg.norm(x))


print("format   keys per token  keys per channel   values per token  values per channel")
axis_errors = {}
for fmt in ("int4", "int2"):
    errors = [np.mean([relative_error(kv[block, kind], fmt, axis) for block in range(n_blocks)])
              for kind in "kv" for axis in ("token", "channel")]
    axis_errors[fmt] = dict(zip(("keys per token", "keys per channel", "values per token", "values per channel"),
                                errors))
    print(f"{fmt:6s} {errors[0]:14.3f} {errors[1]:17.3f} {errors[2]:18.3f} {errors[3]:19.3f}")

# %% tags=["nbval-check-output"]
claim("KIVI's axes win at INT4 and INT2: keys per channel, values per token, each a twentieth lower or more",
      all(e["keys per channel"] < 0.95 * e["keys per token"] and e["values per token"] < 0.95 * e["values per channel"]
          for e in axis_errors.values()))

# %% [markdown]
# The table follows the channel peaks. Per-channel scales fit the keys better than per-token scales do (at
# INT4 the error drops by about a quarter), and per-token scales fit the values better: KIVI's choice, keys
# per channel and values per token, wins on both sides, in every block. At INT2 every error is large — four
# levels cannot describe a vector well, whichever axis the scale runs along.
#
# ## Perplexity against KV bits
#
# `quantized_kv_cache(model, fmt, keys=..., values=...)` hooks every `k_proj` and `v_proj` so that what
# attention reads has been quantized and dequantized, then restores the model on leaving the `with` block.
# Two honest caveats about this simulation (both in its docstring):
#
# * it quantizes **before RoPE**, where LLM-QAT does; KIVI caches rotated keys, and since RoPE mixes channels in
#   pairs the per-channel results differ slightly;
# * perplexity runs full windows of 256 tokens, so a per-channel scale is computed over the **whole window**,
#   later tokens included. A real cache cannot see the future: KIVI keeps the newest tokens in 16 bits and
#   quantizes keys per channel one chunk of tokens at a time. The last row below uses chunks of 32 tokens
#   (`token_group=32`) to come closer to that.

# %%
fp_ppl = qt.perplexity(model, tokenizer, max_tokens=TOKENS, progress=False)
settings = [("fp8_e4m3", "token", "token", None), ("int8", "token", "token", None), ("int8", "channel", "token", None),
            ("int4", "token", "token", None), ("int4", "channel", "token", None),
            ("int2", "token", "token", None), ("int2", "channel", "token", None), ("int2", "channel", "token", 32)]
rows = []
for fmt, keys, values, token_group in settings:
    with quantized_kv_cache(model, fmt, keys=keys, values=values, token_group=token_group):
        ppl = qt.perplexity(model, tokenizer, max_tokens=TOKENS, progress=False)
    rows.append({"format": fmt, "keys": keys, "values": values, "token_group": token_group, "ppl": ppl,
                 "delta_pct": 100 * (ppl / fp_ppl - 1)})
print(f"{'float32 cache':49s} perplexity {fp_ppl:7.2f}")
for row in rows:
    chunks = f", key chunks of {row['token_group']}" if row["token_group"] else ""
    label = f"{row['format']} K per {row['keys']}, V per {row['values']}{chunks}"
    print(f"{label:49s} perplexity {row['ppl']:7.2f}  ({qt.notebook.percent(row['delta_pct'])})")

# %% tags=["nbval-check-output"]
change = {(r["format"], r["keys"], r["token_group"]): r["delta_pct"] for r in rows}
claim("an 8- or 4-bit cache (INT or FP8) costs under 0.2 % of perplexity",
      all(abs(delta) < 0.2 for (fmt, _, _), delta in change.items() if fmt != "int2"))
claim("an INT2 cache costs 1 % or more, whichever axis the key scales run along",
      all(delta > 1 for (fmt, _, _), delta in change.items() if fmt == "int2"))
claim("key chunks of 32 tokens cost less than whole-window key channels at INT2",
      change["int2", "channel", 32] < change["int2", "channel", None])

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
for keys, marker in (("token", "o"), ("channel", "s")):
    points = [(int(r["format"][3:]), r["ppl"]) for r in rows
              if r["format"].startswith("int") and r["keys"] == keys and r["token_group"] is None]
    ax.plot(*zip(*points), marker=marker, label=f"INT, keys per {keys}, values per token")
ax.plot([8], [rows[0]["ppl"]], "^", color="C2", label="FP8 E4M3, per token")
ax.plot([2], [rows[-1]["ppl"]], "D", color="C3", label="INT2, keys per channel in chunks of 32")
ax.axhline(fp_ppl, color="gray", linestyle="--", label="float32 cache")
ax.set_xticks([2, 4, 8])
ax.set_xlabel("bits per cached number (before scales)")
ax.set_ylabel("perplexity")
ax.set_title("The tiny model's perplexity against KV-cache bits")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What the numbers show:
#
# * **8 and 4 bits cost the tiny model nothing measurable**, in INT8, FP8 or INT4 and along either axis: the
#   changes are in the second decimal of a perplexity near 194, within the noise of 4096 test tokens. This is
#   why 8-bit caches ship in inference servers and 4-bit ones are common.
# * **2 bits costs between one and two percent**, and here the axis of the key scales hardly matters:
#   per-channel keys beat per-token keys by about a tenth of a percentage point, far less than the quarter
#   less key error above would suggest. Per-channel scales over chunks of 32 tokens do a little better again,
#   at the price of eight times as many key scales (one per 32 tokens instead of one per 256-token window).
# * So the tiny model confirms KIVI's reasoning in the errors it measures on real keys, but its perplexity
#   barely shows it: its key channels are only mildly uneven (peaks 2–3.5 times the median, where large
#   models report ten times or more), and its windows are only 256 tokens long. Trust the 4-bit result and the
#   error table more than the small gap between the two 2-bit rows.
#
# ## Exercises
#
# 1. **Groups for values.** Per-token scales can also run over groups of channels. Rerun the INT2 rows with
#    `group_size=32` (two groups per 64-channel head) and compute the bits per number with
#    `kv_bits_per_element("int2", 32)`. Is the perplexity worth the extra bits?
# 2. **A 70B model at 128k.** Llama-2-70B has 80 layers, 64 query heads of 128 channels and 8 KV heads
#    (grouped-query attention). Predict its FP16 and INT4 caches at 128k tokens by hand, then check with
#    `fp.kv_cache_bytes`. How do they compare with the 7B model's, which has 32 KV heads?
# 3. **Chunks of tokens.** Rerun the INT2 KIVI row with `token_group` set to 16, 64 and 128. How does the
#    perplexity move with the chunk, and what does each chunk size cost in key scales per number?
#
# ## What you learned
# * The KV cache is $2 L H_{kv} d_{\text{head}} T B$ numbers; it grows with context and batch and, past a few
#   thousand tokens, outweighs 4-bit weights.
# * Keys and values want different scales: keys per channel (their channels differ in size), values per token.
#   The tiny model shows the pattern mildly: in its channel peaks and its quantization errors clearly, in its
#   perplexity hardly at all.
# * For the tiny model 8 and 4 bits are free for the cache; 2 bits costs one to two percent.
#
# Next: [15 · Choosing a method](15_choosing_a_method.ipynb), which puts the weight methods of the course
# side by side on the same model and turns them into a decision rule.
