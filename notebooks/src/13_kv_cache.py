# %% [markdown]
# # 13 · KV-cache quantization
#
# The notebooks so far shrank the weights. A model that generates text also stores, in every attention layer,
# the key $k_t$ and value $v_t$ of every token it has seen, so that token $t+1$ can attend to them without
# recomputing them. This store, the **KV cache**, grows with the context; at long context it outweighs the
# 4-bit weights. This notebook asks how many bits it needs and along which axis its scales should run, on a real
# pretrained model, SmolLM2-135M.
#
# One caveat about SmolLM2, wherever it appears: its file ships the weights as **Q4_1** (blocks of 32, an fp16
# scale and minimum), so the course's "float" SmolLM2 is those 4-bit weights expanded to float32 — a real working
# model. Here the weights stay exactly as they are; only the cache is quantized, and "float" below means that
# model with a float32 cache.
#
# A cache can also be quantized *during* training, so the model learns to live with it: LLM-QAT's KV4, in
# notebook 17 beside quantization-aware training.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval import footprint as fp
from qtutor.eval.divergence import compare, reference
from qtutor.eval.perplexity import score
from qtutor.methods.kv_cache import fake_quantize, kv_bits_per_element
from qtutor.model.activations import quantized_kv_cache

qt.setup_notebook(seed=0)
smol, smol_tok = qt.load_model("smollm2")
claim = qt.notebook.claim
TOKENS = 1024  # the first 1024 test tokens (ctx 512, stride 256) per perplexity: a few seconds each

# %% [markdown]
# ## Why the cache matters
#
# Each layer caches one key and one value vector per KV head and per token, so a batch of $B$ sequences of
# $T$ tokens holds
#
# $$\text{bytes} = 2 \times L \times H_{kv} \times d_{\text{head}} \times T \times B \times \frac{b}{8},$$
#
# with $L$ layers, $H_{kv}$ KV heads of $d_{\text{head}}$ channels and $b$ bits per cached number, scales
# included. SmolLM2 uses **grouped-query attention** (GQA): its 9 query heads share 3 KV heads, three query heads
# reading the same keys and values. The figures below come from the model's configuration, not from a
# measurement. A quantized cache carries one float16 scale and one zero point per token and head (a group of
# 64 numbers, `kv_bits_per_element(fmt, 64)`).

# %% tags=["nbval-check-output"]
config = smol.config
L, H_kv, H_q, d_head = (config.num_hidden_layers, config.num_key_value_heads, config.num_attention_heads,
                        config.head_dim)
per_token = 2 * L * H_kv * d_head
print(f"SmolLM2: {L} blocks, {H_q} query heads sharing {H_kv} KV heads of {d_head} channels, "
      f"up to {config.max_position_embeddings} tokens of context")
print(f"cached numbers per token: 2 x {L} x {H_kv} x {d_head} = {per_token:,}")

MB = 1e6
CONTEXT = 8192
cache_bits = {"FP16": 16.0, "INT8": kv_bits_per_element("int8", 64), "INT4": kv_bits_per_element("int4", 64),
              "INT2": kv_bits_per_element("int2", 64)}
print(f"\ncache  bits/number  bytes/token  bytes per {CONTEXT}-token context")
for name, bits in cache_bits.items():
    context_bytes = fp.kv_cache_bytes(CONTEXT, n_layers=L, n_kv_heads=H_kv, head_dim=d_head, bits=bits)
    print(f"{name:5s} {bits:11.4f} {per_token * bits / 8:12,.0f}   {context_bytes:13,.0f} "
          f"= {context_bytes / MB:6.2f} MB")

parameters = sum(p.numel() for p in smol.parameters())  # the embedding, tied to the output head, counted once
weights = {"FP16": fp.footprint(parameters, "fp16"), "INT4 g64": fp.footprint(parameters, "int4", 64, sym=False)}
print(f"\nweights: {parameters:,} parameters")
for name, footprint in weights.items():
    print(f"  {name:8s} {footprint.bits_per_weight:7.4f} bits/weight  {footprint.bytes / MB:6.2f} MB")

no_gqa = fp.kv_cache_bytes(CONTEXT, n_layers=L, n_kv_heads=H_q, head_dim=d_head, bits=16)
print(f"\nwithout GQA ({H_q} KV heads, one per query head): {2 * L * H_q * d_head:,} numbers per token, "
      f"an FP16 {CONTEXT}-token cache of {no_gqa / MB:.2f} MB; GQA divides it by {H_q // H_kv}")
fp16_cache = fp.kv_cache_bytes(CONTEXT, n_layers=L, n_kv_heads=H_kv, head_dim=d_head, bits=16)
claim(f"at {CONTEXT} tokens the FP16 cache is over half the FP16 weights and over twice the INT4 weights; "
      "without GQA it would be over twice the FP16 weights",
      fp16_cache > weights["FP16"].bytes / 2 and fp16_cache > 2 * weights["INT4 g64"].bytes
      and no_gqa > 2 * weights["FP16"].bytes)

# %%
contexts = np.arange(0, CONTEXT + 1, 256)
fig, ax = plt.subplots(figsize=(7.5, 3.8), constrained_layout=True)
for i, (name, bits) in enumerate(cache_bits.items()):
    sizes = [fp.kv_cache_bytes(T, n_layers=L, n_kv_heads=H_kv, head_dim=d_head, bits=bits) / MB for T in contexts]
    ax.plot(contexts, sizes, color=f"C{i}", label=f"KV cache, {name} ({bits:.2f} bits)")
for (name, footprint), style in zip(weights.items(), ("--", ":")):
    ax.axhline(footprint.bytes / MB, color="gray", linestyle=style, label=f"weights, {name}")
ax.set_xlabel("context (tokens), one sequence")
ax.set_ylabel("MB")
ax.set_xticks(range(0, CONTEXT + 1, 1024))
ax.set_title("SmolLM2-135M: the KV cache grows with the context, the weights do not")
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# The cache grows linearly with the context, and for a single sequence at SmolLM2's full 8k tokens the FP16
# cache is over half the size of the FP16 weights and more than twice that of the 4-bit weights. A server holds
# one cache per sequence, so a batch of $B$ multiplies the lines by $B$ while the weights stay shared. Every
# halving of the bits nearly halves the cache: per 64 numbers, the float16 scale adds $16/64$ of a bit to each,
# and the zero point, stored in $b$ bits, another $b/64$. GQA already took a factor of three off: with one KV
# head per query head, the FP16 cache at 8k would be over twice the FP16 weights.
#
# ## Which axis gets the scale
#
# The keys of one attention head form a matrix $K \in \mathbb{R}^{T \times d}$: a row per token, a column per
# channel. A scale can run along either axis:
#
# * **per token** (LLM-QAT, Liu et al. 2023, arXiv:2305.17888): $s_t = \max_j |K_{tj}| / q_{\max}$, one per
#   row. A token is quantized once, when it arrives: natural for a cache that grows.
# * **per channel** (KIVI, Liu et al. 2024, arXiv:2402.02750): $s_j = \max_t |K_{tj}| / q_{\max}$, one per
#   column over a chunk of tokens. KIVI found that a few *key* channels are large in every token, so they set
#   every per-token scale and crush the other channels; a per-channel scale isolates them. Values show no such
#   channels and stay per token — and an error in a value is averaged by the attention weights, while an error
#   in a key moves the attention weights themselves.
#
# The argument rests on a measurement, so measure it on SmolLM2. `qt.model.capture_calls` records what each
# block's `k_proj` and `v_proj` return on 2 calibration sequences of 512 tokens; split into heads:

# %%
def split_heads(y, head_dim):
    """(sequences, tokens, heads x head_dim) -> (sequences, heads, tokens, head_dim)"""
    y = y.float().numpy()
    return y.reshape(*y.shape[:2], -1, head_dim).transpose(0, 2, 1, 3)


calib = qt.data.calibration(2, 512, tokenizer=smol_tok)
names = {(block, kind): f"model.layers.{block}.self_attn.{kind}_proj" for block in range(L) for kind in "kv"}
calls = qt.model.capture_calls(smol, calib, names.values(), batch_size=2)  # one call per module: both sequences
kv = {key: split_heads(calls[name][0][2], d_head) for key, name in names.items()}  # [2]: the module's output
del calls
print("keys of block 0:", kv[0, "k"].shape, "(sequences, heads, tokens, head_dim)")

# %% [markdown]
# Look at one head first: $|K|$ and $|V|$ of the first sequence, a row per token, a column per channel.

# %%
BLOCK, HEAD = 10, 0
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
for ax, kind, title in zip(axes, "kv", ("keys (k_proj)", "values (v_proj)")):
    image = ax.imshow(np.abs(kv[BLOCK, kind][0, HEAD]), aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_title(f"block {BLOCK}, KV head {HEAD}: |{title}|")
    ax.set_xlabel("channel")
    ax.grid(False)
    fig.colorbar(image, ax=ax)
axes[0].set_ylabel("token")
plt.show()

# %% [markdown]
# The keys are striped: a few columns are bright in nearly every row. The values are speckled, their columns
# faint. Two numbers per head say this for every block: the share of tokens whose largest $|x_{tj}|$ falls in
# the head's most frequent channel, and the share of the head's energy $\sum_t x_{tj}^2$ held by its 4 strongest
# of 64 channels (the median over the 3 heads of each block), for keys and values:

# %%
def head_statistics(x):
    """x (sequences, heads, tokens, d): per head, the share of tokens whose largest |x| is in the most frequent
    channel, and the share of energy in the 4 strongest channels."""
    largest = np.abs(x).argmax(axis=-1)  # (sequences, heads, tokens)
    same_channel = [np.bincount(largest[:, h].ravel()).max() / largest[:, h].size for h in range(x.shape[1])]
    energy = (x ** 2).sum(axis=(0, 2))  # (heads, d)
    top4 = np.sort(energy, axis=-1)[:, -4:].sum(axis=-1) / energy.sum(axis=-1)
    return np.array(same_channel), top4


stats = {key: head_statistics(x) for key, x in kv.items()}
print("block  same largest channel    energy in 4 channels")
print("            keys    values        keys    values")
for block in range(L):
    (k_same, k_top4), (v_same, v_top4) = stats[block, "k"], stats[block, "v"]
    print(f"{block:5d} {np.median(k_same):8.0%} {np.median(v_same):9.0%} {np.median(k_top4):11.0%} "
          f"{np.median(v_top4):9.0%}")
median_over_heads = {kind: [np.median(np.concatenate([stats[b, kind][i] for b in range(L)])) for i in (0, 1)]
                     for kind in "kv"}
print(f"all 90 heads: keys {median_over_heads['k'][0]:.0%} / {median_over_heads['k'][1]:.0%}, "
      f"values {median_over_heads['v'][0]:.0%} / {median_over_heads['v'][1]:.0%} (medians)")

# %% tags=["nbval-check-output"]
claim("in the median key head, 9 tokens in 10 or more have their largest entry in the same channel; "
      "in the median value head, fewer than half",
      median_over_heads["k"][0] >= 0.9 and median_over_heads["v"][0] < 0.5)
claim("in the median key head, 4 of 64 channels hold more than twice the energy share they do in values",
      median_over_heads["k"][1] > 2 * median_over_heads["v"][1])

# %% [markdown]
# KIVI's pattern is there in SmolLM2's keys: the same few channels lead in almost every token, so they set
# every per-token scale, and the other channels get what levels are left. The values, in most blocks, have no
# fixed leading channel.
#
# Now the error itself: fake-quantize the real keys and values along each axis (asymmetric; one scale and zero
# point per token and head, or per channel over each 512-token sequence) and measure the relative error
# $\|\hat X - X\|_F / \|X\|_F$, averaged over the 30 blocks.

# %%
def relative_error(x, fmt, axis):
    return float(np.linalg.norm(fake_quantize(x, fmt, axis=axis) - x) / np.linalg.norm(x))


LABELS = ("keys per token", "keys per channel", "values per token", "values per channel")
print("format " + "".join(f"{label:>20s}" for label in LABELS))
axis_errors = {}
for fmt in ("int8", "int4", "int2"):
    axis_errors[fmt] = {label: np.array([relative_error(kv[block, kind], fmt, axis) for block in range(L)])
                        for label, (kind, axis) in zip(LABELS, [(k, a) for k in "kv" for a in ("token", "channel")])}
    print(f"{fmt:6s} " + "".join(f"{axis_errors[fmt][label].mean():20.4f}" for label in LABELS))

# %% tags=["nbval-check-output"]
claim("in every block, per-channel scales cut the key error by a third or more, at INT8, INT4 and INT2",
      all((e["keys per channel"] < 2 / 3 * e["keys per token"]).all() for e in axis_errors.values()))
claim("for values the axis matters less, and per token wins in at least 25 of the 30 blocks at each width",
      all((e["values per token"] < e["values per channel"]).sum() >= 25 for e in axis_errors.values()))

# %% [markdown]
# The errors follow the stripes. Per-channel scales fit the keys far better than per-token scales, in every
# block, and per-token scales fit the values slightly better in most blocks: KIVI's choice, keys per channel and
# values per token. At INT2 every error is large — four levels cannot describe a vector well, whichever axis the
# scale runs along.
#
# ## Perplexity against KV bits
#
# `quantized_kv_cache(model, fmt, keys=..., values=...)` hooks every `k_proj` and `v_proj` so that what
# attention reads has been quantized and dequantized, then restores the model on leaving the `with` block.
# Two honest caveats about this simulation (both in its docstring):
#
# * it quantizes **before RoPE**, where LLM-QAT does; KIVI caches rotated keys. RoPE rotates channel $j$ with
#   channel $j + 32$ by an angle that grows with the position: the size of each pair is kept (a striped pair
#   stays striped) but its two channels mix, so per-channel results after RoPE differ somewhat;
# * perplexity runs full windows of 512 tokens, so a per-channel scale is computed over the **whole window**,
#   later tokens included. A real cache cannot see the future: KIVI keeps the newest tokens in 16 bits and
#   quantizes keys per channel one chunk of tokens at a time. One row below uses chunks of 32 tokens
#   (`token_group=32`) to come closer to that.
#
# Each point is scored on the first 1024 test tokens (ctx 512, stride 256) against the float cache, token by
# token, with its standard error. It also carries, on the first window of 512 tokens, the KL divergence from the
# float model's next-token distributions, $\frac1N\sum_i \mathrm{KL}(P_i \,\|\, Q_i)$ in nats per token
# (notebook 05), and "same top", the share of positions where its most likely next token is the float model's
# (the token greedy decoding would write). KIVI's axes come first at every width; keys per token are the
# alternative at 4 and 2 bits.

# %%
float_score = score(smol, smol_tok, ctx=512, stride=256, max_tokens=TOKENS, progress=False)
float_reference = reference(smol, smol_tok, ctx=512, max_tokens=512)  # one window: 49,152 log-probs a token


def kv_point(fmt, keys, token_group=None):
    """Perplexity, its change against the float cache, KL and same-top with the cache quantized to fmt."""
    with quantized_kv_cache(smol, fmt, keys=keys, values="token", token_group=token_group):
        measured = score(smol, smol_tok, ctx=512, stride=256, max_tokens=TOKENS, progress=False)
        divergence = compare(smol, float_reference)
    return {"format": fmt, "keys": keys, "token_group": token_group, "score": measured,
            **measured.compare(float_score), **divergence}


settings = [("int8", "channel", None), ("int4", "channel", None), ("int4", "token", None),
            ("int2", "channel", None), ("int2", "token", None), ("int2", "channel", 32)]
points = {setting: kv_point(*setting) for setting in settings}

# %%
print(f"float32 cache: perplexity {float_score.ppl:.2f} +- {float_score.ppl_stderr:.2f} on {float_score.describe()}")
print(f"{'cache (values per token)':38s} {'perplexity':>16s} {'change':>20s} {'KL (nats)':>10s} {'same top':>9s}")
for (fmt, keys, token_group), p in points.items():
    label = f"{fmt.upper()}, keys per {keys}" + (f" in chunks of {token_group}" if token_group else "")
    noise = "outside the noise" if p["significant"] else "inside the noise"
    print(f"{label:38s} {p['score'].ppl:8.2f} +- {p['score'].ppl_stderr:5.2f} "
          f"{qt.notebook.percent(p['delta_pct'], 2):>10s} +- {p['delta_pct_stderr']:6.2f}  {p['kl']:9.4f} "
          f"{p['same_top_pct']:8.1f} %  {noise}")

print("\nthe key axis, paired token by token: keys per token against keys per channel")
axis_cost = {}
for fmt in ("int4", "int2"):
    axis_cost[fmt] = points[fmt, "token", None]["score"].compare(points[fmt, "channel", None]["score"])
    c = axis_cost[fmt]
    print(f"{fmt.upper()}: {qt.notebook.percent(c['delta_pct'])} +- {c['delta_pct_stderr']:.1f} "
          f"({'outside' if c['significant'] else 'inside'} the noise)")
chunked = points["int2", "channel", 32]["score"].compare(points["int2", "channel", None]["score"])
print(f"INT2, key chunks of 32 against whole-window key channels: {qt.notebook.percent(chunked['delta_pct'])} "
      f"+- {chunked['delta_pct_stderr']:.1f} ({'outside' if chunked['significant'] else 'inside'} the noise)")

# %% tags=["nbval-check-output"]
eight = points["int8", "channel", None]
four = [points["int4", keys, None] for keys in ("token", "channel")]
two = [p for (fmt, _, _), p in points.items() if fmt == "int2"]
claim("an INT8 cache moves perplexity by under 0.5 % and by under three standard errors: at most at the edge "
      "of the noise of 1024 tokens",
      abs(eight["delta_pct"]) < 0.5 and abs(eight["delta_pct"]) < 3 * eight["delta_pct_stderr"])
claim("an INT8 cache's KL is under a fiftieth of any INT4 cache's", eight["kl"] < min(p["kl"] for p in four) / 50)
claim("an INT4 cache costs perplexity outside the noise along either key axis",
      all(p["significant"] and p["delta_pct"] > 0 for p in four))
claim("at INT4, keys per token cost at least twice what keys per channel cost, a paired gap outside the noise",
      four[0]["delta_pct"] > 2 * four[1]["delta_pct"] and axis_cost["int4"]["significant"]
      and axis_cost["int4"]["delta_pct"] > 0)
claim("an INT2 cache breaks the model: it at least doubles the perplexity, whatever the key axis",
      all(p["delta_pct"] > 100 for p in two))
claim("at INT2, keys per token give three times the perplexity of keys per channel or more",
      axis_cost["int2"]["delta_pct"] > 200 and axis_cost["int2"]["significant"])
claim("key chunks of 32 tokens cut the INT2 perplexity by a third or more against whole-window key channels",
      chunked["delta_pct"] < -100 / 3 and chunked["significant"])

# %%
fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
for keys, marker, bits in (("channel", "s", [8, 4, 2]), ("token", "o", [4, 2])):
    ppl = [points[f"int{b}", keys, None]["score"].ppl for b in bits]
    err = [points[f"int{b}", keys, None]["score"].ppl_stderr for b in bits]
    ax.errorbar(bits, ppl, yerr=err, marker=marker, capsize=3, label=f"keys per {keys}, values per token")
chunk_point = points["int2", "channel", 32]["score"]
ax.errorbar([2], [chunk_point.ppl], yerr=[chunk_point.ppl_stderr], fmt="D", color="C3", capsize=3,
            label="keys per channel in chunks of 32")
ax.axhline(float_score.ppl, color="gray", linestyle="--", label="float32 cache")
ax.set_xticks([2, 4, 8])
ax.set_xlabel("bits per cached number (before scales)")
ax.set_ylabel("perplexity (log scale)")
ax.set_yscale("log")
ax.set_yticks([20, 50, 100, 200, 500, 1000], labels=["20", "50", "100", "200", "500", "1000"])
ax.minorticks_off()
ax.set_title("SmolLM2-135M: perplexity against KV-cache bits (1024 test tokens)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# What the numbers show (the table above holds every figure with its uncertainty):
#
# * **8 bits is nearly free**: the change in perplexity is a fraction of a percent, at most at the edge of what
#   1024 test tokens can resolve, and the KL divergence is tiny. This is why 8-bit caches ship in inference
#   servers.
# * **4 bits costs something real, and the key axis decides how much.** Keys per token cost at least twice what
#   keys per channel cost, and the paired comparison puts the gap outside the noise: the stripes seen in the
#   keys above are what per-token scales cannot absorb.
# * **2 bits breaks the model** along either axis, but per-channel keys break it far less, and chunks of 32
#   tokens less again (at the price of one key scale per 32 tokens instead of one per 512-token window). KIVI
#   goes further at 2 bits: it keeps the newest tokens in 16 bits and quantizes values in groups of channels.
# * The error table on real keys predicted the order; perplexity shows how much it matters. A word on the
#   weights (the caveat at the top): they ship as Q4_1, so re-rounding them onto their own grid (INT4
#   asymmetric, groups of 32) is nearly free, because they lie on it already. The cache has no such head start:
#   its keys and values are computed in float at run time, and 4 bits cost them something real.
#
# ## Exercises
#
# 1. **Groups for values.** Per-token scales can also run over groups of channels. Rerun the INT2 rows with
#    `group_size=32` in `quantized_kv_cache` (two groups per 64-channel head) and compute the bits per number
#    with `kv_bits_per_element("int2", 32)`. Is the perplexity worth the extra bits?
# 2. **A 70B model at 128k.** Llama-2-70B has 80 layers, 64 query heads of 128 channels and 8 KV heads
#    (grouped-query attention). Predict its FP16 and INT4 caches at 128k tokens by hand, then check with
#    `fp.kv_cache_bytes`. What would they be without GQA, with 64 KV heads (one per query head, as in
#    Llama-2-7B)?
# 3. **8 bits, the streaming way.** An inference server quantizes each token once, when it arrives: keys per
#    token. Add `("int8", "token", None)` and `("fp8_e4m3", "token", None)` to the settings. Is 8 bits still
#    nearly free without KIVI's per-channel keys?
# 4. **Chunks of tokens.** Rerun the INT2 row with `token_group` set to 16, 64 and 128. How does the perplexity
#    move with the chunk, and what does each chunk size cost in key scales per number?

# %% tags=["solution"]
# 1. INT2 with a scale per 32 channels: values per token in two groups per head (and keys too, when per token)
def grouped_point(fmt, keys, group_size):
    with quantized_kv_cache(smol, fmt, keys=keys, values="token", group_size=group_size):
        measured = score(smol, smol_tok, ctx=512, stride=256, max_tokens=TOKENS, progress=False)
    return {"score": measured, **measured.compare(float_score)}


grouped = {keys: grouped_point("int2", keys, 32) for keys in ("channel", "token")}
print(f"bits per number: INT2 per token and head (64 numbers) {kv_bits_per_element('int2', 64):.3f}, "
      f"in groups of 32 {kv_bits_per_element('int2', 32):.3f}, INT4 per head {kv_bits_per_element('int4', 64):.3f}")
for keys, p in grouped.items():
    whole = points["int2", keys, None]
    paired = p["score"].compare(whole["score"])
    print(f"INT2, keys per {keys:7s}: groups of 32 {p['score'].ppl:8.2f} ({qt.notebook.percent(p['delta_pct'])}) "
          f"against {whole['score'].ppl:8.2f} per head; the groups change it by "
          f"{qt.notebook.percent(paired['delta_pct'])} +- {paired['delta_pct_stderr']:.1f} "
          f"({'outside' if paired['significant'] else 'inside'} the noise)")
print(f"INT4, keys per channel: {points['int4', 'channel', None]['score'].ppl:.2f} "
      f"({qt.notebook.percent(points['int4', 'channel', None]['delta_pct'])})")

# %% tags=["solution", "nbval-check-output"]
# 2. 2 x 80 layers x 8 KV heads x 128 channels x 131,072 tokens numbers; FP16: 2 bytes each
numbers = 2 * 80 * 8 * 128 * 131072
print(f"by hand: {numbers:,} numbers = {numbers * 2 / 1e9:.1f} GB in FP16, {numbers * 0.5 / 1e9:.1f} GB at 4 bits "
      "(scales left out)")
for kv_heads in (8, 64):
    fp16_bytes = fp.kv_cache_bytes(131072, n_layers=80, n_kv_heads=kv_heads, head_dim=128)
    int4_bytes = fp.kv_cache_bytes(131072, n_layers=80, n_kv_heads=kv_heads, head_dim=128, bits=4, group_size=64)
    print(f"{kv_heads:2d} KV heads: FP16 {fp16_bytes / 1e9:6.1f} GB, INT4 (a scale per 64) {int4_bytes / 1e9:5.1f} GB")

# %% tags=["solution"]
# 3. keys per token at 8 bits, integer and floating point
streaming = {fmt: kv_point(fmt, "token") for fmt in ("int8", "fp8_e4m3")}
for fmt, p in streaming.items():
    print(f"{fmt:8s} keys per token: {qt.notebook.percent(p['delta_pct'], 2)} +- {p['delta_pct_stderr']:.2f}, "
          f"KL {p['kl']:.4f} nats, same top {p['same_top_pct']:.1f} %  ({kv_bits_per_element(fmt, 64):.3f} bits; "
          f"{'outside' if p['significant'] else 'inside'} the noise)")
print(f"int8     keys per channel: {qt.notebook.percent(eight['delta_pct'], 2)} +- {eight['delta_pct_stderr']:.2f}, "
      f"KL {eight['kl']:.4f} nats ({'outside' if eight['significant'] else 'inside'} the noise)")

# %% tags=["solution"]
# 4. INT2 keys per channel in chunks of tokens: a float16 scale and a 2-bit zero point per chunk and channel
chunks = {group: (points["int2", "channel", 32] if group == 32 else kv_point("int2", "channel", group))
          for group in (16, 32, 64, 128)}
chunks[512] = points["int2", "channel", None]  # the whole window
for group, p in chunks.items():
    scale_bits = kv_bits_per_element("int2", group) - 2
    print(f"chunks of {group:3d} tokens: perplexity {p['score'].ppl:8.2f} ({qt.notebook.percent(p['delta_pct'])} +- "
          f"{p['delta_pct_stderr']:.1f}), key scales {scale_bits:.3f} bits per number")

# %% [markdown]
# ## What you learned
# * The KV cache is $2 L H_{kv} d_{\text{head}} T B$ numbers; it grows with context and batch, and on SmolLM2
#   at 8k tokens an FP16 cache is larger than the 4-bit weights. GQA divides it by the number of query heads
#   that share a KV head.
# * Keys and values want different scales: SmolLM2's keys have a few channels that lead in almost every token,
#   so keys go per channel and values per token (KIVI).
# * On SmolLM2 (whose weights ship as Q4_1) an 8-bit cache is nearly free, a 4-bit cache costs perplexity
#   outside the noise, per-token keys at least twice what per-channel keys cost, and a 2-bit cache breaks the
#   model.
#
# Next: [15 · Choosing a method](15_choosing_a_method.ipynb), which puts the weight methods of the course
# side by side on the same model and turns them into a decision rule.
