# %% [markdown]
# # 02 · Affine quantization and granularity
#
# Every integer quantization method you will meet — RTN, GPTQ, AWQ, SmoothQuant — stores weights the same
# way: a small integer **code** per weight, and a **scale** (sometimes also a **zero point**) shared by a
# group of weights. This notebook builds that map by hand, then asks the two questions that decide its error:
# *symmetric or asymmetric?* and *how many weights share one scale?*
#
# You will learn to compute scales and zero points, see why one outlier ruins a per-tensor scale, and count
# bits per weight honestly — scales included.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)

# %% [markdown]
# ## The affine map
#
# A $b$-bit code $q$ stands for the real number
#
# $$\hat x = s\,(q - z)$$
#
# with scale $s > 0$ and zero point $z$. To quantize, invert and round:
# $q = \mathrm{clamp}(\mathrm{round}(x/s) + z,\ 0,\ 2^b-1)$.
#
# * **Asymmetric** (zero point): map the range $[\min x, \max x]$ onto the codes $0 \dots 2^b-1$:
#   $s = (\max x - \min x)/(2^b - 1)$, $z = \mathrm{round}(-\min x / s)$.
#   qtutor (like GPTQ) first widens the range to contain 0, so that $x = 0$ is exactly representable.
# * **Symmetric** (no zero point): $s = \max|x| / (2^{b-1}-1)$ and codes $-(2^{b-1}-1) \dots 2^{b-1}-1$.
#
# Here is one small vector, quantized to INT4 by hand:

# %% tags=["nbval-check-output"]
x = np.array([-0.71, -0.2, 0.0, 0.13, 0.5, 1.37, 0.9, -0.05], dtype=np.float32)
bits = 4
low, high = min(x.min(), 0), max(x.max(), 0)
scale = (high - low) / (2**bits - 1)
zero = np.rint(-low / scale)
codes = np.clip(np.rint(x / scale) + zero, 0, 2**bits - 1)
x_hat = scale * (codes - zero)
print("scale", qt.notebook.fmt(scale), " zero point", int(zero))
print("codes", codes.astype(int))
print("error", np.round(x_hat - x, 4))

# %% [markdown]
# Every error is at most half a step, $s/2$: rounding moves a value to its nearest grid point.
# The library does the same in one call. Its scale is the one a checkpoint would store: a float16, rounded
# *up* so that the largest value still fits the largest code.

# %% tags=["nbval-check-output"]
q = qt.formats.get("int4").encode(x, group_size=0, sym=False)
print(q)
print("codes", q.codes, " scale", q.scales, " zero", q.zeros)

# %% [markdown]
# ### Exercise
# Write `my_quantize(x, bits)` returning `(codes, scale, zero)` for the asymmetric map above, then check it.
# (The answer is in the cell above; try without looking.)

# %% tags=["nbval-check-output"]
def my_quantize(x, bits):
    low, high = min(x.min(), 0), max(x.max(), 0)
    scale = (high - low) / (2**bits - 1)
    zero = np.rint(-low / scale)
    return np.clip(np.rint(x / scale) + zero, 0, 2**bits - 1), scale, zero


qt.check.affine_quantize(my_quantize)

# %% [markdown]
# ## Symmetric or asymmetric?
#
# A symmetric grid is centred on zero. When the data is not — activations after a GELU are mostly small,
# with a long positive tail — half of a symmetric grid's codes sit where there is no data.

# %% tags=["nbval-check-output"]
activations = qt.synth.skewed_activations(4096)
for sym in (True, False):
    qa = qt.formats.get("int4").encode(activations, group_size=0, sym=sym)
    mse = np.mean((qa.dequantize() - activations) ** 2)
    used = len(np.unique(qa.codes))
    print(f"{'symmetric ' if sym else 'asymmetric'}  MSE {qt.notebook.fmt(mse)}   codes used {used} of 16")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
for ax, sym in zip(axes, (True, False)):
    qa = qt.formats.get("int4").encode(activations, group_size=0, sym=sym)
    grid_codes = np.arange(-7, 8) if sym else np.arange(16)
    zero_point = 0 if sym else float(qa.zeros)
    figures.weight_histogram(activations, float(qa.scales) * (grid_codes - zero_point), ax=ax,
                             title="symmetric INT4" if sym else "asymmetric INT4")
plt.show()

# %% [markdown]
# Weights of a trained layer are roughly symmetric around zero, so for weights the choice matters less;
# the zero point costs $b$ extra bits per group. GPTQ and AWQ default to asymmetric; LLM.int8() and
# SmoothQuant use symmetric INT8 (their activations are re-centred by design).
#
# ## Granularity: how many weights share a scale?
#
# One outlier stretches the range of its whole group, and every other weight of the group gets a coarser
# step. The smaller the group, the fewer weights pay for an outlier — and the more scales you store.
# Here is a weight matrix with LLM-like heavy tails (synthetic: 0.2 % of the weights are 30× larger):

# %%
W = qt.synth.llm_like_weights(256, 1024, seed=0)
fmt = qt.formats.get("int4")
figures.weight_histogram(W, title="synthetic LLM-like weights: Gaussian body, 0.2 % outliers")
plt.show()

# %% tags=["nbval-check-output"]
rows = []
for name, group_size in [("per tensor", 0), ("per channel", -1), ("groups of 128", 128), ("groups of 32", 32)]:
    for sym in (True, False):
        qw = fmt.encode(W, group_size=group_size, sym=sym)
        rows.append({"granularity": name, "sym": sym, "scales": int(np.size(qw.scales)),
                     "bits/weight": round(qw.bits_per_weight, 4),
                     "MSE": float(f"{np.mean((qw.dequantize() - W) ** 2):.3g}")})
for row in rows:
    print(f"{row['granularity']:14s} {'sym ' if row['sym'] else 'asym'}  scales {row['scales']:6d}  "
          f"{row['bits/weight']:.4f} bits/weight   MSE {row['MSE']:.3g}")

# %% [markdown]
# Groups of 128 cut the error several-fold for an eighth of a bit per weight: that is why "INT4 g128" is
# the default of GPTQ, AWQ and most 4-bit checkpoints.
#
# ## Try it
# Move the bit-width, switch the zero point on and off, and change the group size. The orange lines are
# the values the codes of the **first group** can take, drawn over the histogram of that group's own weights
# (per tensor: all of them; per channel: row 0; in groups: the first group of row 0); the error is the whole
# matrix's. (The static figure below the widget shows the default setting, for readers of a printed copy.)

# %% tags=["nbval-ignore-output"]
app = widgets.AffinePlayground(W, bits=4, sym=True, group_size=-1)
app

# %%
state = widgets.affine_summary(W, bits=4, sym=True, group_size=-1)
figures.weight_histogram(state["first_group"], state["grid_first_group"],
                         title="INT4 symmetric, per channel (default setting): row 0 and its grid")
plt.show()

# %% [markdown]
# ## Error against bits per weight
#
# Every point below is one (bits, granularity) choice; its x-coordinate counts the scales and zero points.
# Fewer bits always cost error; at a fixed budget (here at most 4.2 bits per weight, the three best settings
# are printed), spending bits on finer scales instead of on code bits can pay.

# %% tags=["nbval-check-output"]
sweep = []
for bits in range(2, 9):
    for name, group_size in [("per channel", -1), ("g128", 128), ("g32", 32)]:
        qw = qt.formats.get(f"int{bits}").encode(W, group_size=group_size, sym=False)
        sweep.append({"label": f"asym {name}", "setting": f"INT{bits} asym {name}",
                      "bits_per_weight": qw.bits_per_weight, "mse": float(np.mean((qw.dequantize() - W) ** 2))})
budget = [r for r in sweep if r["bits_per_weight"] <= 4.2]
for r in sorted(budget, key=lambda r: r["mse"])[:3]:
    print(f"{r['setting']:22s} {r['bits_per_weight']:.3f} bits/weight   MSE {r['mse']:.3g}")

# %%
figures.error_vs_bits(sweep, title="INT2..INT8 on synthetic LLM-like weights")
plt.show()

# %% [markdown]
# ## Packing: what is actually stored
#
# Codes of 4 bits are stored two per byte (qtutor: first code in the low nibble, as NVIDIA and PyTorch do);
# 3-bit codes pack 8 to 3 bytes. Signed codes are stored in two's complement, as INT4 hardware reads them.

# %% tags=["nbval-check-output"]
small = np.array([[-7, -1, 0, 7, 3, -3, 1, 2]], dtype=np.float32) * 0.1
q4 = qt.formats.get("int4").encode(small, group_size=-1, sym=True)
packed = q4.format.pack(q4)
print("codes ", q4.codes.tolist())
print("bytes ", [f"0x{b:02x}" for b in packed])
q3 = qt.formats.get("int3").encode(W[:1, :8], group_size=-1, sym=False)
print("8 INT3 codes", q3.codes.tolist(), "->", len(q3.format.pack(q3)), "bytes")

# %% [markdown]
# ## What you learned
# * A code means $s(q-z)$; rounding costs at most $s/2$ per weight, and a wide range means a wide step.
# * Asymmetric grids fit skewed data; symmetric grids save the zero point and suit centred weights.
# * Smaller groups isolate outliers: INT4 with groups of 128 costs 4.125–4.156 bits per weight and a fraction
#   of the per-channel error.
#
# Next: [03 · Memory math and footprints](03_memory_math.ipynb).
