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
import contextlib

import numpy as np
import matplotlib.pyplot as plt
import torch
import qtutor as qt
from qtutor.methods import smoothquant
from qtutor.model.activations import quantized_inputs
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)

# %% [markdown]
# ## First, the truth about our model
#
# SmoothQuant works on the inputs of the linears that follow a norm: q, k, v after `input_layernorm`, gate and
# up after `post_attention_layernorm`. For each of those norms in the tiny model, the max/median ratio of the
# per-channel peaks $\max_t |x_{t,j}|$ of its output, and the same ratio for the weight columns that read it
# (1 means perfectly flat; outlier channels of large models give ratios in the tens to hundreds):

# %%
model, tokenizer = qt.load_model("tiny")
calib = qt.data.calibration(n_samples=16, seq_len=256)
with smoothquant.smooth_model(model, calib, alpha=0.5) as smoothed:
    difficulty = smoothed.difficulty
print(f"{'norm':40s} {'activations':>11s} {'weights':>8s}   after smoothing (alpha 0.5)")
for norm, ratio in difficulty.items():
    before, after = ratio["before"], ratio["after"]
    print(f"{norm:40s} {before['activation']:11.2f} {before['weight']:8.2f}   "
          f"{after['activation']:6.2f} {after['weight']:8.2f}")

# %% tags=["nbval-check-output"]
claim = qt.notebook.claim
claim("no norm output has an outlier channel: every largest channel peak is under twice the median",
      all(ratio["before"]["activation"] < 2 for ratio in difficulty.values()))
claim("after smoothing at alpha 0.5 both sides are equally hard (within 1 %)",
      all(abs(ratio["after"]["activation"] / ratio["after"]["weight"] - 1) < 0.01 for ratio in difficulty.values()))

# %% [markdown]
# The tiny model's norm outputs have **no outlier channels**: their largest channel peak is less than 1.5 times
# the median, no rougher than the weights that read them. (The inputs of `down_proj`, notebook 05, are rougher,
# but they do not come out of a norm, so the paper's SmoothQuant leaves them alone; we come back to them at the
# end.) Whatever SmoothQuant does to the norm outputs, it will have little to migrate here. The mechanism, though, is worth seeing where it matters; first the equations.
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
# At $\alpha = 0.5$, channel $j$ of both sides peaks at $\sqrt{\max|X_j|\,\max|W_j|}$; as $\alpha \to 1$ the
# activations become flat and the weights take all the outliers. The division by $s$ costs nothing at run time:
# $X$ is the output of an RMSNorm, $\gamma \odot x / \mathrm{rms}(x)$, so dividing its weight $\gamma$ by $s$
# does it once, offline. The floating-point model computes the same function — check it on the tiny model:

# %%
tokens = torch.as_tensor(calib[:2])
with torch.no_grad():
    logits = model(tokens).logits
    with smoothquant.smooth_model(model, calib, alpha=0.5):
        logits_smoothed = model(tokens).logits
    logits_restored = model(tokens).logits
print(f"largest |logit| {logits.abs().max().item():.1f}; after smoothing, max |difference| "
      f"{(logits_smoothed - logits).abs().max().item():.1e}; after restore {(logits_restored - logits).abs().max().item():.1e}")

# %% tags=["nbval-check-output"]
claim("smoothing moves no logit by more than 1e-4 (float32 rounding of the same product)",
      (logits_smoothed - logits).abs().max().item() < 1e-4)
claim("and leaving the with block gives the float model back bit for bit", torch.equal(logits_restored, logits))

# %% [markdown]
# The difference is float32 rounding, a few millionths on logits of order 10, and leaving the `with` block restores the
# model exactly.
#
# ## The mechanism, on a clearly labelled synthetic layer
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
# The same numbers for a few values of $\alpha$, and the figure at $\alpha = 0.5$:

# %% tags=["nbval-check-output"]
print(f"no smoothing:  activations max/median {smoothquant.difficulty(X_syn, W_syn)['activation']:6.1f}, "
      f"W8A8 error {slider.unsmoothed['w8a8_error']:.4f}, W4A4 error {slider.unsmoothed['w4a4_error']:.4f}")
for alpha in (0.25, 0.5, 0.75, 0.85):
    state = widgets.smoothing_summary(X_syn, W_syn, alpha)
    print(f"alpha {alpha:.2f}:    activations max/median {state['activation_ratio']:6.1f}, weights "
          f"{state['weight_ratio']:5.1f}, W8A8 error {state['w8a8_error']:.4f}, W4A4 error {state['w4a4_error']:.4f}")

# %%
state = widgets.smoothing_summary(X_syn, W_syn, 0.5)
figures.channel_peaks_pair(state["activation_peaks"], state["weight_peaks"], planted,
                           title="synthetic layer (4 planted channels), alpha = 0.5")
plt.show()

# %% [markdown]
# Without smoothing, W8A8 loses about 7 % of the output's norm on this layer and W4A4 most of it. Smoothing cuts
# the W8A8 error by most of an order of magnitude around $\alpha = 0.5$, where both sides are equally hard;
# pushing $\alpha$ further hands the outliers to the weights, and the error rises again. W4A4 improves too, but
# stays far from usable: with 15 levels per token, even a flat row is coarse, which is why 4-bit activations
# need more than smoothing (rotations such as QuaRot's, or FP4 formats with small blocks).
#
# ## The real model: W8A8 and W4A4, with and without smoothing
#
# Every linear except the output head with weights INT8 (or INT4) per output channel, and every linear's inputs
# fake-quantized to INT8 (or INT4) per token, on the fly; smoothing, when used, folded in first. Two measures on
# the first 4096 test tokens (ctx 256, stride 128): perplexity, and the **KL divergence** from the float model's next-token
# distributions (notebook 07 explains why: it compares whole distributions and only grows with the error, where
# perplexity can move either way by more than a small change is worth).
#
# Besides the paper's smoothing of the norm outputs, the last rows also smooth the inputs of `o_proj` and
# `down_proj`, with $1/s$ folded into the rows of `v_proj` and `up_proj` (`linear_sources=True`): the attention
# average and the product $\mathrm{silu}(g) \odot u$ both pass a per-channel scale straight through, the same
# trick AWQ uses (`qt.model.scaling`).

# %%
from qtutor.eval.divergence import kl_divergence, reference
from qtutor.eval.sweep import evaluate

TOKENS = 4096
fp = qt.perplexity(model, tokenizer, max_tokens=TOKENS, progress=False)
float_reference = reference(model, max_tokens=TOKENS)


def smoothing(alpha, linear_sources):
    if alpha is None:
        return contextlib.nullcontext()
    return smoothquant.smooth_model(model, calib, alpha, linear_sources=linear_sources)


print(f"float32                               perplexity {fp:8.2f}")
measured = {}
for fmt, name in (("int8", "W8A8"), ("int4", "W4A4")):
    for alpha, linear_sources in ((None, False), (0.5, False), (0.85, False), (0.5, True), (0.85, True)):
        with smoothing(alpha, linear_sources), qt.quantize_model(model, "rtn", fmt, -1, True, progress=False), \
                quantized_inputs(model, fmt):
            ppl = qt.perplexity(model, tokenizer, max_tokens=TOKENS, progress=False)
            kl = kl_divergence(model, float_reference)
        how = "no smoothing" if alpha is None else \
            f"{'norms + v, up' if linear_sources else 'norms'}, alpha {alpha:.2f}"
        measured[name, how] = {"delta_pct": 100 * (ppl / fp - 1), "kl": kl}
        print(f"{name} {how:33s} perplexity {ppl:8.2f} ({qt.notebook.percent(100 * (ppl / fp - 1), 2)})   "
              f"KL {kl:.5f}")

# %% tags=["nbval-check-output"]
plain_w8, plain_w4 = measured["W8A8", "no smoothing"], measured["W4A4", "no smoothing"]
claim("W8A8 stays within 0.1 % of float in perplexity, with or without smoothing",
      all(abs(m["delta_pct"]) < 0.1 for (name, _), m in measured.items() if name == "W8A8"))
claim("W4A4 costs more than 1 % with every setting",
      all(m["delta_pct"] > 1 for (name, _), m in measured.items() if name == "W4A4"))
claim("smoothing the norm outputs alone leaves W4A4's KL within 5 % of no smoothing",
      abs(measured["W4A4", "norms, alpha 0.50"]["kl"] / plain_w4["kl"] - 1) < 0.05)
claim("smoothing down_proj's inputs too (alpha 0.5) takes 5 % or more off the KL of W4A4",
      measured["W4A4", "norms + v, up, alpha 0.50"]["kl"] < 0.95 * plain_w4["kl"])

# %% [markdown]
# Stated plainly: on the tiny model, W8A8 per channel / per token costs almost nothing with or without
# smoothing. W4A4 costs a few percent, and the paper's smoothing of the norm outputs does not recover any of it
# (the KL divergence stays where it was, perplexity even rises): that is what the statistics at the top
# predicted — with no outlier channel in the norm outputs, migrating range into the weights buys the
# activations nothing and costs the now 4-bit weights some precision.
#
# Smoothing the inputs of `down_proj` too, where this model's rough channels are, does help: at
# $\alpha = 0.5$ the KL divergence of W4A4 drops by about 15 % and that of W8A8 by about a fifth (at 0.85 too
# much range lands in the 4-bit weights, and the gain is gone) — while the perplexity of W4A4 goes *up*.
# Both are true: the smoothed model's distributions are closer to the float model's on average, and the tokens
# that actually came next happen to lose a little probability. This is why a small model's perplexity is a
# blunt instrument for differences of a few percent, and why quantization tools report the divergence too.
#
# The large models SmoothQuant was made for (OPT-175B, BLOOM-176B, Llama) have outlier channels 10-100× the
# median, and there W8A8 without smoothing loses badly while smoothed W8A8 matches FP16, as the synthetic
# layer shows in miniature.
#
# ## W4A4 needs more: rotate before rounding
#
# Smoothing moves range between two sides; a rotation removes the outlier. For any orthogonal $R$,
# $XW^\top = (XR)(WR)^\top$, and a random $R$ spreads an outlier channel's energy over all channels
# (about $1/\sqrt{n}$ of it each), so the rotated token is flat and its per-token scale wastes no codes. QuaRot
# (Ashkboos et al., 2024) rounds both sides in the rotated basis, $Q(XR)\,Q(WR)^\top$, with $R$ a randomized
# Hadamard matrix (`qtutor.methods.rotation`). First the synthetic layer's planted channels, then the model:

# %% tags=["nbval-check-output"]
from qtutor.methods import rotation
from qtutor.model.activations import fake_quantize_activations

R = rotation.rotation_matrix(X_syn.shape[1])
peaks, rotated_peaks = np.abs(X_syn).max(axis=0), np.abs(X_syn @ R).max(axis=0)
print(f"synthetic layer: activations max/median channel peak {peaks.max() / np.median(peaks):5.1f} before the "
      f"rotation, {rotated_peaks.max() / np.median(rotated_peaks):4.1f} after")
int4_rows = lambda rows: fake_quantize_activations(rows, "int4")  # noqa: E731
for name, X_hat in (("plain", int4_rows(X_syn)), ("rotated", rotation.rotated_fake_quantize(X_syn, int4_rows))):
    print(f"INT4 per token, {name:8s} relative error {np.linalg.norm(X_hat - X_syn) / np.linalg.norm(X_syn):.3f}")

# %%
rotated = {}
for fmt, name in (("int8", "W8A8"), ("int4", "W4A4")):
    rotated[name] = point = evaluate(model, tokenizer, "rotation", fmt, -1, True, max_tokens=TOKENS, baseline=fp,
                                     reference=float_reference)
    print(f"{name} rotated{'':26s} perplexity {point['ppl']:8.2f} ({qt.notebook.percent(point['delta_pct'], 2)})   "
          f"KL {point['kl']:.5f}")

# %% tags=["nbval-check-output"]
claim("rotated W8A8 stays within 0.1 % of float in perplexity", abs(rotated["W8A8"]["delta_pct"]) < 0.1)
claim("the rotation takes 40 % or more off W4A4's KL, more than any smoothing did",
      rotated["W4A4"]["kl"] < 0.6 * plain_w4["kl"]
      and rotated["W4A4"]["kl"] < min(m["kl"] for (name, _), m in measured.items() if name == "W4A4"))

# %% [markdown]
# The rotation more than halves W4A4's divergence from the float model, where the best smoothing took off about
# 15 %, and takes a third off its perplexity cost. It is not free in a real kernel: $XR$ is one more product per
# layer, which QuaRot makes cheap with a fast Walsh-Hadamard transform ($O(n \log n)$) and by folding most
# rotations into the weights. What remains of W4A4's cost on the tiny model is the 4-bit grid itself.
#
# ## What you learned
# * Activations are quantized on the fly with one scale per token, so an outlier *channel* ruins every token's
#   scale; the integer product rules out a scale per channel.
# * SmoothQuant moves range from activations to weights with $s_j = \max|X_j|^\alpha / \max|W_j|^{1-\alpha}$,
#   folded into the preceding norm: the float model is unchanged, only the quantization difficulty moves.
# * Smoothing pays off where outlier channels exist (the planted layer; large models; on the tiny model the
#   inputs of `down_proj`, smoothed through `up_proj`) and does nothing where they do not (the tiny model's norm
#   outputs) — measure before you smooth, and measure with more than perplexity.
# * A random rotation before rounding (QuaRot) flattens every channel at once, and does more for W4A4 than
#   any smoothing.
#
# Next: [10 · GGUF k-quants and export](10_gguf_kquants.ipynb).
