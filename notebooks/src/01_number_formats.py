# %% [markdown]
# # 01 · Number formats
#
# Quantization replaces each weight by the nearest value a smaller **number format** can represent.
# A format is a finite set of numbers — a *grid* — plus a way to name each one with a few bits.
# This notebook lays out the grids the course uses: integers (INT8 ... INT2), floats from 16 bits down to
# 4 (FP16, BF16, FP8, FP6, FP4), block formats with shared scales (MXFP4, NVFP4) and NF4.
#
# You will read a float's bits by hand, see why floats keep *relative* precision and integers keep
# *absolute* precision, meet the rules for rounding, overflow and NaN, and compare the 4-bit formats
# on the same weights.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)

# %% [markdown]
# ## Every format of the course
#
# `bits` is the width of one element; `bits/weight` adds what the format stores beside the elements
# (scales, zero points) at its usual granularity, for a 4096 × 4096 weight.

# %% tags=["nbval-check-output"]
for name in qt.formats.names():
    fmt = qt.formats.get(name)
    print(f"{name:11s} {fmt.family:12s} {fmt.bits:2d} bits  {fmt.bits_per_weight(group_size=fmt.weight_group_size):7.4f}"
          f" bits/weight  {len(fmt.grid):6d} values  max {fmt.max_value:.4g}")

# %% [markdown]
# ## A float, bit by bit
#
# A float code is a sign $s$, an exponent field $e$ and a mantissa field $m$. For a normal number
#
# $$x = (-1)^s \; 2^{\,e - \text{bias}} \; (1 + m / 2^M), \qquad \text{bias} = 2^{E-1} - 1.$$
#
# FP8 E4M3 has $E = 4$ exponent bits (bias 7) and $M = 3$ mantissa bits. Here is 0.3 cast to it:

# %% tags=["nbval-check-output"]
e4m3 = qt.formats.get("fp8_e4m3")
code = int(e4m3.cast(np.float32(0.3)))
bits = [(code >> i) & 1 for i in range(7, -1, -1)]
sign, exponent, mantissa = bits[0], int("".join(map(str, bits[1:5])), 2), int("".join(map(str, bits[5:])), 2)
print("code", f"0x{code:02x}", "bits", "".join(map(str, bits)))
print(f"sign {sign}, exponent {exponent} -> 2^({exponent} - 7), mantissa {mantissa} -> 1 + {mantissa}/8")
print("value", (-1) ** sign * 2.0 ** (exponent - 7) * (1 + mantissa / 8), "=", float(e4m3.values(np.array([code]))[0]))

# %%
figures.bit_layout(1, 4, 3, bits, title="0.3 in FP8 E4M3 is stored as 0.3125")
plt.show()

# %% [markdown]
# ### Exercise
# By hand: which E4M3 value is nearest to 100? (Hint: in the binade $[64, 128)$ the step is $64/8 = 8$.)
# Then check with `e4m3.values(e4m3.cast(np.float32(100)))`.

# %% tags=["nbval-check-output"]
print(e4m3.values(e4m3.cast(np.float32(100.0))))

# %% [markdown]
# ## Integers keep absolute precision, floats keep relative precision
#
# An INT8 grid (scaled so that its largest value is 448, like E4M3's) has evenly spaced values: the same
# step everywhere, so small numbers get a large *relative* error. A float grid doubles its step every binade:
# about the same relative error at every magnitude, down to the subnormals.

# %%
fig, axes = plt.subplots(3, 1, figsize=(9, 4.6), constrained_layout=True)
int8_grid = qt.formats.get("int8").grid * (448 / 127)
figures.number_line(int8_grid[int8_grid >= 0], ax=axes[0], title="INT8 scaled to max 448 (positive half)", log=True)
figures.number_line(e4m3.grid[e4m3.grid >= 0], ax=axes[1], title="FP8 E4M3 (positive half)", log=True)
fp4 = qt.formats.get("fp4_e2m1")
figures.number_line(fp4.grid, ax=axes[2], title="FP4 E2M1: all 15 values", log=False)
plt.show()

# %% tags=["nbval-check-output"]
magnitudes = np.logspace(-2, 2.5, 7).astype(np.float32)
int8_scale = np.float32(448 / 127)
for x in magnitudes:
    as_int8 = np.clip(np.rint(x / int8_scale), -127, 127) * int8_scale
    as_fp8 = e4m3.values(e4m3.cast(x))
    print(f"x = {x:9.4f}   INT8 relative error {abs(as_int8 - x) / x:6.1%}   FP8 E4M3 {abs(as_fp8 - x) / x:6.1%}")

# %% [markdown]
# ## Rounding, overflow and NaN: where formats disagree
#
# Rounding is to the nearest value, ties to the even mantissa (IEEE's rule; `ml_dtypes` and NVIDIA's converters
# agree, and qtutor's casts are tested bit for bit against `ml_dtypes`). Overflow is where formats differ:
# E5M2 has an infinity, E4M3FN ("finite") has none and only one NaN pattern per sign, FP6/FP4 have neither.
# A plain cast (IEEE rule) turns 500 into NaN in E4M3; quantizers *saturate* to 448 instead.

# %% tags=["nbval-check-output"]
x = np.array([0.75, 2.5, 500.0, np.inf], dtype=np.float32)
for name, saturate in [("fp8_e4m3", False), ("fp8_e4m3", True), ("fp8_e5m2", False), ("fp4_e2m1", True)]:
    fmt = qt.formats.get(name)
    print(f"{name:9s} saturate={saturate!s:5s}", fmt.values(fmt.cast(x, saturate=saturate)))

# %% [markdown]
# ## Sixteen bits, two trade-offs: FP16 against BF16
#
# Both 16-bit floats spend one bit on the sign; they split the other fifteen differently. **FP16** (IEEE half)
# has 5 exponent bits and 10 fraction bits: fine steps, but nothing above 65,504. **BF16** ("brain float", Google)
# keeps float32's 8 exponent bits, so it reaches the same ~3.4·10³⁸, and is left with 7 fraction bits: steps 8×
# coarser. Training wants range (a gradient or an activation above 65,504 becomes `inf` in FP16 and poisons
# everything after it; FP16 training needs loss scaling), so modern models are trained and shipped in BF16;
# FP16 keeps three more significant bits for values in its range.

# %% tags=["nbval-check-output"]
fp16, bf16 = qt.formats.get("fp16"), qt.formats.get("bf16")
print(f"{'':14s}{'exp bits':>9s}{'fraction bits':>15s}{'largest':>12s}{'smallest normal':>17s}")
for fmt, (e, m) in ((fp16, (5, 10)), (bf16, (8, 7))):
    print(f"{fmt.name:14s}{e:9d}{m:15d}{fmt.max_value:12.6g}{2.0 ** (2 - 2 ** (e - 1)):17.3g}")
for x in (70000.0, 1e-6, 1 / 3, 3000.7):
    stored = {fmt.name: float(fmt.values(fmt.cast(np.float32([x])))[0]) for fmt in (fp16, bf16)}
    print(f"x = {x:<12.8g} fp16 -> {stored['fp16']:<14.8g} bf16 -> {stored['bf16']:<14.8g}")

# %% [markdown]
# Read it row by row: **70,000** overflows FP16 to `inf` and lands on 70,144 in BF16 (range); **1/3** keeps about
# three decimal digits in FP16 and two in BF16 (precision); **3000.7** shows BF16's steps of 16 at that size
# against FP16's 2. Tiny values like 10⁻⁶ survive in both, as FP16 subnormals or BF16 normals. Choose BF16
# where values may be large (activations, training); for weights, which are small and bounded, either is fine,
# and both count as the "unquantized" 16-bit baseline of every table in this course.

# %% [markdown]
# ## Four bits, four ideas
#
# Sixteen codes cannot cover a weight matrix's range on their own: every 4-bit format shares a **scale**
# between a block of weights. They differ in the grid and in the scale:
#
# | format | grid | block | scale | bits/weight |
# |---|---|---|---|---|
# | INT4 g128 | integers −8..7 | 128 | fp16 (+ zero point) | 4.125–4.156 |
# | MXFP4 | FP4 E2M1 | 32 | E8M0: a power of two | 4.25 |
# | NVFP4 | FP4 E2M1 | 16 | FP8 E4M3 (+ one fp32 per tensor) | 4.5 |
# | NF4 | 16 quantiles of a normal distribution | 64 | fp32 absmax | 4.5 (4.127 with double quantization) |
#
# On Gaussian weights (what trained weights roughly look like):

# %% tags=["nbval-check-output"]
W = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
for name, group in [("int4", 128), ("mxfp4", 32), ("nvfp4", 16), ("nf4", 64), ("fp4_e2m1", -1)]:
    q = qt.formats.get(name).encode(W, group_size=group)
    error = np.mean((q.dequantize() - W) ** 2)
    print(f"{name:9s} group {group:4d}   {q.bits_per_weight:.4f} bits/weight   MSE {error:.5f}")

# %% [markdown]
# NF4 spends its levels where normal weights are, and wins. NVFP4's smaller blocks and finer (E4M3) scales
# beat MXFP4's power-of-two scales — which on these outlier-free weights waste most of what the small block
# buys: MXFP4 is no better than one float32 scale per row (`fp4_e2m1`, group −1). The power of two costs twice:
# the step is up to 2× coarser than needed, and a block whose largest value lies between $6X$ and $8X$ clips:

# %% tags=["nbval-check-output"]
block = np.zeros((1, 32), np.float32)
block[0, :3] = [7.0, 6.9, 4.0]
print("MXFP4 of [7.0, 6.9, 4.0, 0 ...] ->", qt.formats.get("mxfp4").encode(block).dequantize()[0, :3])

# %% [markdown]
# ## Try it
# Pick a format and type a number: the ticks are the format's values (no scale), the coloured lines your
# number and what gets stored. FP16 and BF16 have too many values to draw, so for them the line zooms in on
# the 16 values around your number; try 70000 in both. The static figure below shows the default.

# %% tags=["nbval-ignore-output"]
widgets.FormatExplorer(name="fp8_e4m3", value=0.3)

# %%
state = widgets.format_summary("fp8_e4m3", 0.3)
figures.number_line(state["grid"], highlight={"x = 0.3": [0.3], f"stored {state['stored']:g}": [state["stored"]]},
                    title="fp8_e4m3: 0.3 is stored as 0.3125 (default setting)")
plt.show()

# %% [markdown]
# ## What you learned
# * A float is sign × power of two × (1 + fraction): constant *relative* precision; an integer grid has
#   constant *absolute* precision.
# * Formats differ at the edges: ties to even, saturation versus NaN/Inf on overflow.
# * At 4 bits the scale is everything: its block size and its own format (fp16, E8M0, E4M3) decide the error.
#
# Next: [02 · Affine quantization and granularity](02_affine_quantization.ipynb).
