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
from qtutor.eval.sweep import evaluate
from qtutor.methods import gptq
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)

# %% [markdown]
# ## Step through it
#
# A toy layer of 8 outputs × 16 inputs, whose inputs are correlated (as real activations are). Press **Step**
# to quantize one column to INT3: its rounding error (red) is pushed onto the columns to its right. The loss
# curve compares GPTQ's running output error with RTN's.

# %%
rng = np.random.default_rng(0)
mixing = rng.standard_normal((16, 16)) * 0.6 + np.eye(16)
X = (rng.standard_normal((256, 16)) @ mixing).astype(np.float32)  # 256 tokens of 16 correlated features
W = rng.standard_normal((8, 16)).astype(np.float32)

# %% tags=["nbval-ignore-output"]
stepper = widgets.GPTQStepper(W, X, fmt="int3", group_size=-1, blocksize=4)
stepper

# %% [markdown]
# The same object without the widget: after four steps, the state an instructor would point at.

# %% tags=["nbval-check-output"]
solver = gptq.GPTQ(W, gptq.Hessian(16).add(X), qt.formats.get("int3"), group_size=-1, blocksize=4)
for _ in range(4):
    step = solver.step()
print("column", step.column, " rounding error of that column (first 3 rows):", np.round(np.asarray(step.error)[:3], 4))
print("columns updated by it:", list(step.update_columns)[:6], "...")
result = solver.run()
H = gptq.Hessian(16).add(X).H
rtn = qt.formats.get("int3").encode(W, group_size=-1).dequantize()
print(f"output loss: GPTQ {gptq.layer_loss(W, result.dequantize(), H):.4f}   RTN {gptq.layer_loss(W, rtn, H):.4f}")

# %%
stepper_static = widgets.GPTQStepper(W, X, fmt="int3", group_size=-1, blocksize=4)
for _ in range(6):
    stepper_static.press("Step")
plt.show()

# %% [markdown]
# ## On the real model
#
# Every linear layer, block by block (each block's inputs are captured after the previous blocks are
# quantized, as the reference implementation does), with 32 calibration windows of 256 tokens.
# Perplexity on the first 4096 test tokens (ctx 256, stride 128):

# %%
model, tokenizer = qt.load_model("tiny")
TOKENS = 4096
calib = qt.data.calibration(n_samples=32, seq_len=256)
baseline = evaluate(model, tokenizer, None, max_tokens=TOKENS)
rows = []
for fmt, group in (("int4", -1), ("int3", 128), ("int3", -1)):
    for method in ("rtn", "gptq"):
        point = evaluate(model, tokenizer, method, fmt, group, calib=calib, max_tokens=TOKENS, baseline=baseline["ppl"])
        rows.append({"label": f"{method} {fmt} g{group}", **point})
        print(f"{method:4s} {fmt} {'per channel' if group == -1 else 'g' + str(group):11s} perplexity {point['ppl']:8.2f}"
              f" ({point['delta_pct']:+6.1f} %)")

# %%
figures.pareto(rows, reference=baseline["ppl"], title="GPTQ against RTN on the tiny model")
plt.show()

# %% [markdown]
# ## Calibration: how much, and from where?
#
# GPTQ fits the layers to its calibration text. With too few samples $H$ is poorly estimated; with text from
# another domain (news instead of Wikipedia) it fits the wrong inputs. Each cell below is INT3 g128, measured
# on Wikipedia test text and on the news text:

# %%
for samples, source in ((8, "wiki"), (32, "wiki"), (32, "news")):
    data = qt.data.calibration(n_samples=samples, seq_len=256, source=source)
    with qt.quantize_model(model, "gptq", "int3", 128, calib=data, progress=False):  # quantized once, measured twice
        wiki = qt.perplexity(model, tokenizer, "test", max_tokens=TOKENS, progress=False)
        news = qt.perplexity(model, tokenizer, "news", max_tokens=TOKENS, progress=False)
    print(f"calibrated on {samples:3d} x 256 {source:4s} tokens:  wiki perplexity {wiki:8.2f}   "
          f"news perplexity {news:8.2f}")

# %% [markdown]
# On this model the three rows differ by a few tenths of a percent at most, and not always in the direction
# the story predicts: its layers are forgiving, and 8 windows of 256 tokens already estimate $H$ of a
# 256-wide layer well. Large models are less forgiving: the GPTQ paper calibrates on 128 segments of 2048
# tokens, and the AWQ paper (Lin et al., 2023) shows GPTQ losing more than AWQ when calibration and evaluation
# text come from different domains. Notebook 15 puts the domain question in a two-by-two table.
#
# ## What you learned
# * GPTQ minimizes each layer's output error: each column's rounding error is redistributed over the columns
#   not yet quantized, through the inverse Hessian of the layer's inputs.
# * It needs calibration data; on large models the amount and the domain of that data matter (on the tiny
#   model, only by tenths of a percent).
# * At 3 bits, and at 4 bits with one scale per row, it removes most of what rounding loses.
#
# Next: [07 · AWQ](07_awq.ipynb).
