# %% [markdown]
# # 07 · AWQ: protect the weights that meet large activations
#
# A weight's rounding error does not reach the output alone: in $y_i = \sum_j W_{ij} x_j$, the error
# $\Delta W_{ij}$ arrives multiplied by the input $x_j$. An input channel whose values are large in most tokens
# makes every weight of its column **salient**. Lin et al. (2023, arXiv:2306.00978) observed that keeping only
# about 1 % of the columns — those of the channels with the largest mean $|x_j|$ — in 16 bits recovers most of
# what 3-bit rounding loses, while 1 % of columns chosen at random recovers almost nothing.
#
# Mixed precision is awkward for a kernel, though. AWQ (activation-aware weight quantization) buys the same
# protection with integers only, by **scaling** the salient columns up before rounding.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.sweep import evaluate
from qtutor.methods import awq
from qtutor.viz import figures, widgets
from qtutor.viz.widgets import output_error  # mean (X W_hat^T - X W^T)^2, the error AWQ's search minimizes

qt.setup_notebook(seed=0)


# %% [markdown]
# ## Salient channels, on a clearly labelled synthetic layer
#
# The tiny model's inputs are tame (notebook 05 measured them), so the phenomenon is shown first where it is
# strong: a **synthetic** layer of 128 outputs × 256 inputs (`qt.synth.llm_like_weights`) that reads 512
# tokens in which 4 channels (1.6 %) are 10× larger than the rest in every token
# (`qt.synth.activations_with_outlier_channels`). Round it to INT3 with one scale per 128 weights, then put back
# the original float weights of 4 columns: the salient ones, or 4 chosen at random.

# %% tags=["nbval-check-output"]
X_syn, planted = qt.synth.activations_with_outlier_channels(tokens=512, channels=256, outlier_channels=4,
                                                            outlier_scale=10, seed=0)
W_syn = qt.synth.llm_like_weights(128, 256, seed=1)
int3 = qt.formats.get("int3")
rounded = int3.encode(W_syn, group_size=128).dequantize()
salient = np.argsort(awq.activation_mean(X_syn))[-4:]
randomly = np.random.default_rng(0).choice(256, size=4, replace=False)
print("planted channels:", planted.tolist(), " largest mean |x|:", sorted(salient.tolist()))
for name, keep in (("nothing kept", []), ("4 random columns kept", randomly), ("4 salient columns kept", salient)):
    W_mixed = rounded.copy()
    W_mixed[:, keep] = W_syn[:, keep]
    print(f"INT3 g128, {name:23s} output error {output_error(X_syn, W_syn, W_mixed):.5f}")

# %% [markdown]
# ## Scaling instead of keeping
#
# Multiply column $j$ of $W$ by $s_j > 1$ and divide input $j$ by the same $s_j$: the product is unchanged,
#
# $$y = W x = \big(W\,\mathrm{diag}(s)\big)\big(\mathrm{diag}(s)^{-1} x\big)
#   \;\approx\; Q\big(W\,\mathrm{diag}(s)\big)\,\mathrm{diag}(s)^{-1} x .$$
#
# Rounding adds an error of at most half a step $\Delta$ to every scaled weight, and dividing by $s_j$ afterwards
# shrinks that error on column $j$ to $\Delta/(2 s_j)$. The step $\Delta = \max|w|/q_{\max}$ of a group barely
# grows when a few of its columns grow (unless one of them becomes the group's maximum), so the salient columns
# are rounded $s_j$ times more finely, and the others about as before. The division of $x$ is free: $x$ comes out
# of a norm or a linear layer whose weights absorb $1/s$ (notebook 08 shows the folding).
#
# AWQ takes the scale from the activations alone and lets one exponent decide how hard to push:
#
# $$s_j = \overline{|x_j|}^{\,\alpha} \big/ \sqrt{\max_k \overline{|x_k|}^{\,\alpha}\,\min_k \overline{|x_k|}^{\,\alpha}},
#   \qquad \alpha^\star = \arg\min_{\alpha \in \{0, 0.05, \dots, 0.95\}}
#   \big\| X W^\top - X\,\mathrm{diag}(s_\alpha)^{-1} Q\big(W \mathrm{diag}(s_\alpha)\big)^\top \big\|^2 ,$$
#
# with $\overline{|x_j|}$ the mean magnitude of input channel $j$ over the calibration tokens. At $\alpha = 0$
# every $s_j = 1$: the search starts from RTN and can only do better on the calibration data. Too large an
# $\alpha$ pushes the salient columns to the group's maximum, coarsens the step for everyone else, and the
# error climbs again: the curve is U-shaped.
#
# ## The search, interactive
#
# The curve of output errors over the grid of $\alpha$ for the synthetic layer; move the bit-width and the
# group size (the star is the $\alpha$ AWQ keeps, the dashed line RTN):

# %% tags=["nbval-ignore-output"]
search = widgets.AWQAlphaSearch(W_syn, X_syn, bits=3, group_size=128)
search

# %% [markdown]
# The same search without the widget, at INT3 and INT4 with groups of 128:

# %% tags=["nbval-check-output"]
synthetic = {}
for bits in (3, 4):
    synthetic[bits] = state = search.compute(bits=bits, group_size=128)  # the widget's numbers, no redraw
    print(f"synthetic layer, INT{bits} g128: alpha* = {state['alpha']:.2f}, output error {state['best_loss']:.5f}"
          f" vs RTN {state['rtn_loss']:.5f} ({state['gain']:.2f}x smaller)")

# %%
state = search.compute(bits=3, group_size=128)
figures.alpha_curve(state["alphas"], state["losses"], state["alpha"], state["rtn_loss"],
                    title="synthetic layer (4 planted channels), INT3 g128")
plt.show()

# %% [markdown]
# ## A real layer of the tiny model
#
# The widest inputs of the tiny model belong to `down_proj` (notebook 05: its largest channel peaks are a few
# times the median; the inputs of q, k, v, gate and up are flatter still). Its weights and 512 of its
# calibration inputs:

# %%
model, tokenizer = qt.load_model("tiny")
calib = qt.data.calibration(n_samples=8, seq_len=256)
layer = "model.layers.0.mlp.down_proj"
X_real = qt.model.capture_inputs(model, calib[:2], [layer])[layer]
W_real = qt.model.get_weight(qt.model.find_layer(model, layer))
means = awq.activation_mean(X_real)
print(f"{layer}: {W_real.shape[0]} x {W_real.shape[1]} weights, {X_real.shape[0]} tokens; "
      f"mean |x_j| from {means.min():.3f} to {means.max():.3f} (median {np.median(means):.3f})")

# %% tags=["nbval-ignore-output"]
real_search = widgets.AWQAlphaSearch(W_real, X_real, bits=3, group_size=128)
real_search

# %%
real = {}
for bits in (3, 4):
    real[bits] = state = real_search.compute(bits=bits, group_size=128)
    print(f"{layer}, INT{bits} g128: alpha* = {state['alpha']:.2f}, output error {state['best_loss']:.3g}"
          f" vs RTN {state['rtn_loss']:.3g} ({state['gain']:.2f}x smaller)")

# %% [markdown]
# (Errors measured on a model's own activations move in their last digits from one processor to another, so the
# notebook checks what they show rather than the digits: see notebooks/AUTHORING.md.)

# %% tags=["nbval-check-output"]
claim = qt.notebook.claim
claim("on the real layer the search still beats plain rounding, by 2 % or more at INT3 and at INT4",
      all(real[bits]["gain"] > 1.02 for bits in (3, 4)))
claim("but by far less than on the planted layer: under two thirds of its gain",
      all(real[bits]["gain"] < synthetic[bits]["gain"] / 1.5 for bits in (3, 4)))

# %%
state = real_search.compute(bits=3, group_size=128)
figures.alpha_curve(state["alphas"], state["losses"], state["alpha"], state["rtn_loss"],
                    title=f"tiny model, {layer}, INT3 g128")
plt.show()

# %% [markdown]
# On the real layer the curve is much shallower than on the planted one: its mean channel magnitudes span a
# factor of about 20 but no handful of channels dominates, so scaling buys only a modest reduction of the output
# error (the ratio printed above), against a factor of two or more on the synthetic layer.
#
# (The scale search minimizes the error of this one layer's output on these 512 tokens; what that is worth in
# perplexity is measured at the end.)
#
# ## Then clip
#
# After scaling, AWQ searches once more, per row and group of 128: shrink the clipping range $\max|w|$ to
# $r \max|w|$, $r \in \{1, 0.95, \dots, 0.55\}$, and keep the $r$ that minimizes the error of that group's share
# of the output, $\sum_j x_j w_j$ (on the same layer, after its INT3 scale search). Clipping a rare large weight costs that one weight a lot and gives every other
# weight of the group a finer step (q and k are not clipped: their errors meet in the product $q k^\top$).

# %%
s = awq.search_scale(X_real, [W_real], awq.linear_block, int3, 128)["s"]
W_scaled = W_real * s[None, :]
clip_at = awq.search_clip(W_scaled, X_real / s[None, :], int3, 128)
W_clipped = awq.apply_clip(W_scaled, clip_at, 128)
ratio = clip_at / np.abs(W_scaled.reshape(*clip_at.shape, 128)).max(axis=2)
print(f"groups clipped: {np.mean(ratio < 1):.0%}, median kept range {np.median(ratio):.2f} x max|w|")
clip_errors = {}
for name, W_candidate in (("scaled", W_scaled), ("scaled and clipped", W_clipped)):
    W_hat = int3.encode(W_candidate, group_size=128).dequantize() / s[None, :]
    clip_errors[name] = output_error(X_real, W_real, W_hat)
    print(f"INT3 g128 {name:19s} output error {clip_errors[name]:.3g}")

# %% tags=["nbval-check-output"]
claim("most groups are clipped, and clipping takes a tenth or more off the scaled layer's INT3 output error",
      np.mean(ratio < 1) > 0.5 and clip_errors["scaled and clipped"] < 0.9 * clip_errors["scaled"])

# %% [markdown]
# ## The whole model: one scale per group, searched on the block's output
#
# Inside a model, $1/s$ has to go somewhere, and where it goes decides which layers share a scale. In a Llama
# block there are four places (`qt.model.scaling.scaling_groups`):
#
# | $x$ comes out of (absorbs $1/s$) | read by (columns $\times s$) | $\alpha$ chosen on the error of |
# |---|---|---|
# | `input_layernorm` | `q_proj`, `k_proj`, `v_proj` | the whole attention's output |
# | `v_proj` (its rows) | `o_proj` | `o_proj`'s output |
# | `post_attention_layernorm` | `gate_proj`, `up_proj` | the whole MLP's output |
# | `up_proj` (its rows) | `down_proj` | `down_proj`'s output |
#
# q, k and v read the same normalized $x$, so they must share one $s$, and it is judged by what the attention
# makes of their errors together (an error in k that the softmax ignores does not count). `v_proj` can absorb
# the scale of `o_proj`'s inputs because the attention average is linear in v, channel by channel; `up_proj`
# that of `down_proj`'s because $\mathrm{silu}(g) \odot u$ is linear in $u$. This is what
# `qt.quantize_model(model, "awq", ...)` does, block by block, as the reference implementation does; then each
# layer clips and rounds. The $\alpha$ it chose for each group (8 calibration windows of 256 tokens):

# %%
from qtutor.eval.divergence import reference

fmt_int4 = qt.formats.get("int4")
with awq.scale_model(model, calib, fmt_int4, 128, progress=False) as scaled:
    searches = scaled.searches
print(f"{'block':6s}" + "".join(f"{name:>26s}" for name in ("q,k,v", "o", "gate,up", "down")))
for block in range(6):
    row = [searches[f"model.layers.{block}.{source}"] for source in
           ("input_layernorm", "self_attn.v_proj", "post_attention_layernorm", "mlp.up_proj")]
    cells = [f"alpha {found['alpha']:.2f}, error x{min(found['losses']) / found['losses'][0]:.2f}" for found in row]
    print(f"{block:<6d}" + "".join(f"{cell:>26s}" for cell in cells))

# %% tags=["nbval-check-output"]
claim("no group's search ends worse than plain rounding (alpha = 0 is on the grid)",
      all(min(found["losses"]) <= found["losses"][0] for found in searches.values()))
claim("and the best group gains at most about a sixth (error x0.8 or more)",
      all(min(found["losses"]) >= 0.8 * found["losses"][0] for found in searches.values()))

# %% [markdown]
# Each entry is the chosen $\alpha$ and the inspected output's error relative to plain rounding ($\alpha = 0$):
# from no change to about a sixth smaller, and never larger, since $\alpha = 0$ is on the grid. The tiny model
# has no strongly salient channels, so there is little to protect.
#
# What is that worth for the whole model? Perplexity on the first 4096 test tokens (ctx 256, stride 128), and the **KL divergence**
# from the float model's next-token distributions, $\frac1N\sum_i \mathrm{KL}(P_i \,\|\, Q_i)$ in nats per
# token (`qt.eval.divergence`). At 4 bits with groups of 128, rounding changes this model's perplexity by a
# few tenths of a percent, up or down: some tokens gain probability, others lose it, and perplexity only sees
# the balance. The divergence compares whole distributions, is zero only for the float model, and grows with
# every error, so it can order methods that perplexity cannot (llama.cpp reports it for the same reason).
# "AWQ per layer" searches a scale for each linear on its own output, the simpler variant of the cells above.

# %%
TOKENS = 4096
baseline = evaluate(model, tokenizer, None, max_tokens=TOKENS)
float_reference = reference(model, max_tokens=TOKENS)
print(f"float32                  perplexity {baseline['ppl']:8.2f}")
rows = []


def measure(label, method, fmt, **kw):
    point = evaluate(model, tokenizer, method, fmt, 128, calib=calib, max_tokens=TOKENS, baseline=baseline["ppl"],
                     reference=float_reference, **kw)
    rows.append({"label": label, "method": method, **point})
    print(f"{label:24s} perplexity {point['ppl']:8.2f} ({qt.notebook.percent(point['delta_pct'], 2)})   "
          f"KL {point['kl']:.5f}")


for fmt in ("int4", "int3"):
    measure(f"RTN {fmt} g128", "rtn", fmt)
    measure(f"AWQ {fmt} g128", "awq", fmt)

# %%
measure("AWQ per layer int4 g128", "awq", "int4", scope="layer")

# %% tags=["nbval-check-output"]
kl = {row["label"]: row["kl"] for row in rows}
ppl_change = {row["label"]: row["delta_pct"] for row in rows}
claim("AWQ is closer to the float model than RTN in KL, by a tenth or more, at INT4 and at INT3",
      kl["AWQ int4 g128"] < 0.9 * kl["RTN int4 g128"] and kl["AWQ int3 g128"] < 0.9 * kl["RTN int3 g128"])
claim("the per-layer search lands within a fifth of the block-level one in KL",
      abs(kl["AWQ per layer int4 g128"] / kl["AWQ int4 g128"] - 1) < 0.2)
claim("in perplexity every INT4 and INT3 variant stays within 2 % of float",
      all(abs(change) < 2 for change in ppl_change.values()))

# %% [markdown]
# Read these numbers for what they are. In KL divergence AWQ is ahead of RTN at both bit widths, by a fifth to a
# quarter; the block-level search and the per-layer one land within a few percent of each other here (the
# shared scales matter where q, k and v disagree about which channels are salient, which on this model they
# barely do). In perplexity the same models
# differ by a few tenths of a percent at INT4, where rounding costs the tiny model nothing measurable, and the
# order can come out either way: a search fitted to 2048 calibration tokens moves the distributions closer to
# the float model's on average without promising anything about the probability of each next token. At INT3
# the differences are still within about a tenth of a percent of perplexity. GPTQ (notebook 06) does better than
# both on this model. The large gains the AWQ paper reports come with the strongly salient channels of large
# models, which the synthetic layer imitates.
#
# ## What you learned
# * Salience comes from the activations: a weight matters in proportion to the inputs it multiplies, and about
#   1 % of input channels carry most of the rounding damage where activations have outlier channels.
# * AWQ protects those channels by scaling: $s = \overline{|x|}^{\alpha}$, with $\alpha$ searched on a grid to
#   minimize the layer's output error ($\alpha = 0$ is RTN), then a per-group clip search — integers only, the
#   scales folded into the previous layer.
# * In a model, the scales are shared by every linear that reads the same input (q, k, v; gate, up), folded into
#   what produced that input (a norm, or `v_proj` / `up_proj`), and judged on the block's output.
# * On the tiny model AWQ beats RTN in KL divergence from the float model but stays within the noise of
#   perplexity; its large gains need the salient channels that large models have, as the planted layer shows.
#
# Next: [08 · SmoothQuant, W8A8 and W4A4](08_smoothquant.ipynb).
