# %% [markdown]
# # 11 · FP8, FP4, MX and NVFP4 on a model
#
# Notebook 01 encoded FP8, FP4, MXFP4 and NVFP4 bit by bit on made-up numbers. This notebook puts the formats
# where they are used: on the weights and the activations of a real model, SmolLM2-135M, as the tensor cores of
# recent GPUs multiply them. It answers four questions:
#
# 1. which GPU runs which format natively, and what "emulated" means on a CPU;
# 2. **W8A8**: with 8-bit weights *and* 8-bit activations, is FP8 E4M3 better than INT8, and why;
# 3. what a real MXFP4 block and a real NVFP4 block store, byte by byte (the E8M0 scale, the two-level scale);
# 4. **4-bit blocks**: how much RTN, GPTQ and MR-GPTQ (GPTQ after a Hadamard rotation inside each block) lose,
#    and what the rotation does to a block;
# 5. how a quantized model is shipped to a server: the compressed-tensors checkpoint vLLM reads.
#
# One layer is measured live; the whole model was measured once, by `python tools/fp_formats_smollm2.py`, and
# ships as data (`qt.zoo.fp_formats()`).

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor import formats
from qtutor.methods import mr_gptq
from qtutor.metrics import relative_output_error
from qtutor.model.activations import fake_quantize_activations
from qtutor.viz import figures

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
smol, smol_tok = qt.load_model("smollm2")

# %% [markdown]
# ## Where each format runs natively
#
# A format is *native* on a GPU when its tensor cores take it as an input to a matrix product; anywhere else it
# is only a storage format, decoded to 16 bits before the product (which saves memory and bandwidth, not
# arithmetic).
#
# | NVIDIA generation | examples | tensor-core inputs, besides FP16/BF16 |
# |---|---|---|
# | Ampere (2020) | A100, RTX 30 | TF32, INT8, INT4. **No FP8**: FP8 weights are decoded to FP16 first |
# | Ada Lovelace (2022) | L4, L40S, RTX 40 | + **FP8** E4M3 and E5M2 (the scales multiply the accumulated product afterwards) |
# | Hopper (2022) | H100, H200 | **FP8** E4M3 and E5M2 (the Transformer Engine), INT8 |
# | Blackwell (2024–25) | B200, GB200, RTX 50 | + **MXFP8, MXFP6, MXFP4 and NVFP4**: the tensor core reads the block scales (E8M0 per 32, E4M3 per 16) itself |
#
# AMD follows the same path: FP8 from the MI300 (in a variant encoding, E4M3FNUZ), MXFP4 and MXFP6 from the
# MI350. Before Blackwell a 4-bit float has no tensor core: it is a storage format, decoded to 16 bits before the
# product, as the weight-only INT4 of notebooks 04–07 is in most kernels.
#
# **Emulated here.** This notebook has no such GPU, so every format is *fake-quantized*: rounded to its grid,
# held in float32, and multiplied in float32. That gives the tensor core's arithmetic, not an approximation of
# it: an E4M3 value has 4 significant bits (1 implicit + 3 stored), so the product of two has at most 8, and
# float32 holds 24. What may differ is the order of the additions (as between any two kernels), the
# accumulator's width, and the float32 rounding of a value times its scale (about $10^{-7}$ relative, thousands
# of times below the format's own error). The first point, checked on every pair of E4M3 values:

# %% tags=["nbval-check-output"]
e4m3 = formats.get("fp8_e4m3")
values = np.unique(e4m3.grid)  # every finite E4M3 value, both signs
products32 = np.multiply.outer(values.astype(np.float32), values.astype(np.float32))
products64 = np.multiply.outer(values.astype(np.float64), values.astype(np.float64))
print(f"{values.size} distinct finite E4M3 values (largest {values.max():g}), {products32.size:,} products")
claim("every E4M3 x E4M3 product is exact in float32", np.array_equal(products32.astype(np.float64), products64))

# %% [markdown]
# ## W8A8: 8-bit weights times 8-bit activations
#
# Weight-only formats (notebooks 04, 06, 07) shrink the model and still multiply in 16 bits. To use the 8-bit
# tensor cores both sides of $Y = X W^\top$ must be 8-bit. As in notebook 08, the weights get **one scale per
# output channel** (row of $W$), chosen once offline; the activations get **one scale per token** (row of $X$),
# computed on the fly from that token's largest value:
#
# $$\hat X_{t,:} = a_t\, Q\!\left(X_{t,:}/a_t\right),\quad \hat W_{i,:} = b_i\, Q\!\left(W_{i,:}/b_i\right)
#   \quad\Rightarrow\quad (\hat X \hat W^\top)_{ti} = a_t\, b_i \sum_j Q(\cdot)_{tj}\, Q(\cdot)_{ij},$$
#
# so the scales leave the sum and the tensor core computes only the 8-bit products. $Q$ rounds to INT8
# ($a_t = \max_j |X_{tj}| / 127$, a uniform grid) or to FP8 E4M3 ($a_t = \max_j |X_{tj}| / 448$, a grid with
# 3 mantissa bits at every power of two). The difference: INT8 has a constant *absolute* step, so a token whose
# largest channel is 1,000 times its ordinary ones rounds those to a step of 8 times their size, mostly to 0;
# E4M3 keeps a *relative* precision of $2^{-4}$ down to $2^{-6}/448$ of the maximum (and coarser below that), so
# ordinary channels survive an outlier channel in the same token.
#
# ### One layer, live
#
# SmolLM2's worst input is that of block 11's `down_proj` (notebook 05: two channels thousands of times the median
# one); for contrast, block 11's `q_proj`, whose input comes from an RMSNorm and has no such channel. Their inputs
# on 8 calibration windows of 256 tokens (used by GPTQ further down) and 2 held-out windows:

# %%
down, q_proj = "model.layers.11.mlp.down_proj", "model.layers.11.self_attn.q_proj"
calib = qt.data.calibration(8, 256, source="wiki", tokenizer=smol_tok)
held_out = qt.data.calibration(2, 256, source="wiki", seed=1, tokenizer=smol_tok)
captured = qt.model.capture_inputs(smol, np.concatenate([calib, held_out]), [down, q_proj])
X_calib = {name: X[: calib.size] for name, X in captured.items()}
X_test = {name: X[calib.size:] for name, X in captured.items()}
weights = {name: qt.model.get_weight(qt.model.find_layer(smol, name)) for name in (down, q_proj)}
peaks = np.abs(X_test[down]).max(axis=0)
outlier = peaks > 20 * np.median(peaks)
print(f"down_proj input: {outlier.sum()} channels over 20x the median channel peak, the largest "
      f"{peaks.max() / np.median(peaks):.0f}x")

# %% [markdown]
# Each input rounded per token to INT8 and to E4M3, and three errors: over the whole token
# ($\|\hat x - x\| / \|x\|$, averaged over tokens), over the **ordinary channels** only (all but the outliers), and
# of the layer's output with float weights ($\|\hat X W^\top - X W^\top\|^2 / \|X W^\top\|^2$):

# %%
def activation_errors(X, W, fmt, ordinary):
    X_hat = fake_quantize_activations(X, fmt)
    token = np.mean(np.linalg.norm(X_hat - X, axis=1) / np.linalg.norm(X, axis=1))
    rest = np.linalg.norm((X_hat - X)[:, ordinary]) / np.linalg.norm(X[:, ordinary])
    Y = X @ W.T
    return {"token": token, "ordinary": rest, "output": np.sum((X_hat @ W.T - Y) ** 2) / np.sum(Y**2)}


act = {(name, fmt): activation_errors(X_test[name], weights[name], fmt, ~outlier if name == down else slice(None))
       for name in (down, q_proj) for fmt in ("int8", "fp8_e4m3")}
print(f"{'input':10s} {'format':9s} {'token':>8s} {'ordinary channels':>18s} {'output':>10s}")
for (name, fmt), e in act.items():
    print(f"{name.split('.')[-1]:10s} {fmt:9s} {e['token']:8.4f} {e['ordinary']:18.4f} {e['output']:10.2e}")

# %% tags=["nbval-check-output"]
claim("on down_proj's input, E4M3 rounds the ordinary channels 5x more precisely than INT8",
      act[down, "fp8_e4m3"]["ordinary"] < act[down, "int8"]["ordinary"] / 5)
claim("yet down_proj's output error is lower with INT8 than with E4M3", act[down, "int8"]["output"]
      < act[down, "fp8_e4m3"]["output"])
claim("on the norm output (q_proj's input) E4M3's output error is half INT8's or less",
      act[q_proj, "fp8_e4m3"]["output"] < 0.5 * act[q_proj, "int8"]["output"])

# %% [markdown]
# The outlier channel costs INT8 what the lesson predicts: on `down_proj`'s input its ordinary channels are
# rounded with an error ten times E4M3's. The layer's *output* tells another story: the two massive channels
# carry most of $XW^\top$ there, and near the top of its range INT8 is the finer grid (steps of $\max/127$,
# under 1 % of the largest value, where E4M3's step is an eighth of the power of two below the value: 32 between
# 256 and 448). Each format is precise where the other is not: INT8 on the largest values, E4M3 on the
# small ones. On the norm output, without a massive channel, E4M3's relative precision wins outright.
#
# ### The whole model, stored
#
# Every linear layer but the output head, on the model card's 4096 test tokens (windows of 512): INT8 without
# and with SmoothQuant ($\alpha$ = 0.5, notebook 08), FP8 E4M3 with one weight scale per output channel or one
# per tensor (what the first FP8 recipes used), FP8 with one *static* activation scale per layer calibrated on
# the calibration text instead of one per token, and FP8 weights with 16-bit activations (W8A16). The change is
# paired token by token with the float model, so its standard error is far smaller than the perplexity's own.

# %% tags=["nbval-check-output"]
study = qt.zoo.fp_formats("smollm2")
base = study["float"]


def show(rows):
    print(f"{'':32s} {'bits/w':>6s} {'perplexity':>15s} {'change':>17s} {'KL':>7s} {'same top':>8s}")
    for row in rows:
        print(f"{row['label']:32s} {row['bits_per_weight']:6.3f} {row['ppl']:7.2f} ± {row['ppl_stderr']:<5.2f} "
              f"{qt.notebook.percent(row['delta_pct'], 2):>9s} ± {row['delta_pct_stderr']:<5.2f} {row['kl']:7.4f} "
              f"{row['same_top_pct']:7.1f} %")


print(f"float: perplexity {base['ppl']:.2f} ± {base['ppl_stderr']:.2f} on {study['tokens']} tokens")
show(study["w8a8"])
w8 = {row["label"]: row for row in study["w8a8"]}

# %%
figures.changes_with_noise(study["w8a8"], title=f"W8A8 on SmolLM2-135M ({study['tokens']} test tokens)")
plt.show()

# %% [markdown]
# What the stored figures support, checked below. "Clearly below" means more than the noise: the two changes'
# bands of ± 2 paired standard errors do not overlap (stricter than a paired test between the two rows, which
# the stored figures do not allow: they keep no per-token losses).

# %% tags=["nbval-check-output"]
def clearly_below(a, b):
    """a's change + 2 se is below b's change - 2 se."""
    return a["delta_pct"] + 2 * a["delta_pct_stderr"] < b["delta_pct"] - 2 * b["delta_pct_stderr"]


def inside_noise(row):
    return abs(row["delta_pct"]) < 2 * row["delta_pct_stderr"]


int8, smooth = w8["W8A8-INT8"], w8["W8A8-INT8 + SmoothQuant"]
fp8, fp8_tensor, w8a16 = w8["W8A8-FP8 (per-channel weights)"], w8["W8A8-FP8 (per-tensor weights)"], w8["W8A16-FP8"]
claim("W8A8-INT8 without smoothing changes perplexity by more than 2 paired standard errors", not inside_noise(int8))
claim("W8A8-FP8 (per-channel weights) does not beat it: its change is not clearly below INT8's, and the two KL "
      "divergences are within 5 % of each other",
      not clearly_below(fp8, int8) and abs(fp8["kl"] / int8["kl"] - 1) < 0.05)
claim("SmoothQuant takes more than a third off W8A8-INT8's KL divergence", smooth["kl"] < 2 / 3 * int8["kl"])
claim("FP8 weights alone (W8A16) already change perplexity by more than 2 paired standard errors, with over half "
      "of W8A8-FP8's KL", not inside_noise(w8a16) and w8a16["kl"] > 0.5 * fp8["kl"])
card = {row["label"]: row for row in qt.zoo.measurements("smollm2")["rtn"]}  # the model card, same tokens
claim("and over 3x the KL of INT8 weights alone (the model card's W8A16 'INT8 per-channel' row)",
      w8a16["kl"] > 3 * card["INT8 per-channel"]["kl"])
claim("one FP8 weight scale per tensor or per channel: perplexity cannot tell them apart (their bands overlap)",
      not clearly_below(fp8, fp8_tensor) and not clearly_below(fp8_tensor, fp8))

# %% [markdown]
# Stated plainly, the stored figures do **not** show FP8 ahead of INT8 on SmolLM2: W8A8 in E4M3 costs about as much
# as W8A8 in INT8 (a few per cent of perplexity, outside the noise for both, with the same KL), and SmoothQuant's
# INT8 has the lowest KL of the W8A8 rows. Two things seen above are consistent with it. The activation error that
# matters sits in the massive channels of `down_proj`, where INT8 is the finer grid (the layer measured live). And
# FP8 costs something on the *weights*: W8A16-FP8 alone changes perplexity by about as much as SmoothQuant's whole
# W8A8, several times what INT8 weights alone cost (the model card: +0.6 %), since for weights a few times below
# their row's largest, INT8's step (max/127) is finer than E4M3's (an eighth of a power of two). One weight scale
# per tensor did not do worse than one per channel here: the two are inside each other's noise, and the KL is even
# a little lower per tensor, which we have not explained. FP8's advantages lie elsewhere: no calibration and no
# smoothing to fold in, a range that survives an unusual token, and one format for training and inference on
# Hopper.

# %% [markdown]
# ## One block up close: MXFP4's E8M0 byte
#
# MXFP4 (OCP Microscaling v1.0) stores 32 E2M1 elements (the 15 values 0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6) and
# one **E8M0** byte: an exponent alone, $X = 2^{e-127}$. The rule is $e - 127 = \lfloor \log_2 \max|V| \rfloor - 2$
# (2 is E2M1's largest exponent), so $\max|V|/X$ lies in $[4, 8)$, and a block whose largest values lie between
# $6X$ and $8X$ **saturates** them to $6X$. Here is a real block of 32 of `down_proj`'s first row, the first
# one that saturates. (SmolLM2's file stores Q4_1, blocks of 32 weights on 16 levels each, aligned with MX's
# blocks, so a block holds at most 16 distinct values: the reason its "float" weights are on a grid already.)

# %% tags=["nbval-check-output"]
W = weights[down]
mxfp4, nvfp4 = formats.get("mxfp4"), formats.get("nvfp4")
row = W[:1]
q_mx = mxfp4.encode(row)
ratio = np.abs(row.reshape(-1, 32)).max(axis=1) / q_mx.scales.reshape(-1)
b = int(np.argmax(ratio > 6))  # the first block of the row with values in (6X, 8X)
V = row[0, 32 * b: 32 * (b + 1)]
byte = int(q_mx.extra["scale_codes"].reshape(-1)[b])
X = 2.0 ** (byte - 127)
codes = q_mx.codes[0, 32 * b: 32 * (b + 1)]
decoded = q_mx.dequantize()[0, 32 * b: 32 * (b + 1)]
print(f"block {b} of row 0: {len(np.unique(V))} distinct values, max|V| = {np.abs(V).max():.4g}, "
      f"floor(log2 max|V|) = {int(np.floor(np.log2(np.abs(V).max())))}")
print(f"E8M0 byte 0x{byte:02X} = {byte}: X = 2^({byte} - 127) = 2^{byte - 127}")
print("V / X    ", " ".join(f"{v:5.2f}" for v in V[:16] / X))
print("code     ", " ".join(f"{c:5X}" for c in codes[:16]))
print("decoded/X", " ".join(f"{v:5.1f}" for v in decoded[:16] / X))
saturated = np.abs(V) > 6 * X
print(f"{saturated.sum()} of 32 values above 6X saturate to ±6X: {np.round(V[saturated] / X, 2).tolist()} -> "
      f"{(decoded[saturated] / X).tolist()}")
claim("the block's largest value divided by X lies in [6, 8): it is clipped", 6 <= np.abs(V).max() / X < 8)
claim("every decoded value is an E2M1 value times X", np.all(np.isin(decoded / X, mxfp4.grid)))

# %% [markdown]
# Over the whole layer, how often does that happen? If the block maxima were spread evenly on a log scale,
# $\log_2(8/6) = 41\,\%$ of the blocks would land in $[6X, 8X)$:

# %% tags=["nbval-check-output"]
q_layer = mxfp4.encode(W)
top = np.abs(W.reshape(-1, 32)).max(axis=1) / q_layer.scales.reshape(-1)
print(f"{np.mean(top >= 6):.1%} of the layer's {top.size:,} MXFP4 blocks clip their largest value "
      f"({np.mean(np.abs(W) > 6 * np.repeat(q_layer.scales.reshape(-1), 32).reshape(W.shape)):.2%} of all weights)")

# %% [markdown]
# ## NVFP4: two levels of scale on a block of 16
#
# NVFP4 halves the block (16 elements) and gives its scale a mantissa: an **E4M3** byte per block. E4M3 spans
# only $2^{-9}$ to 448, so a second, **FP32 scale per tensor** maps the tensor's range into it:
#
# $$s_\text{enc} = \frac{448 \cdot 6}{\max |W|},\qquad s_b = \mathrm{E4M3}\!\left(s_\text{enc}\, \tfrac{\max_b|x|}{6}\right),
#   \qquad x \approx \mathrm{E2M1}\!\left(x \tfrac{s_\text{enc}}{s_b}\right) \cdot \tfrac{s_b}{s_\text{enc}}.$$
#
# The first 16 weights of the same MX block, in NVFP4:

# %% tags=["nbval-check-output"]
q_nv = nvfp4.encode(W)
s_enc = np.float32(q_nv.extra["tensor_scale"])
k = 2 * b  # the NVFP4 block that starts where the MX block does
scale_byte = int(q_nv.extra["scale_codes"][0, k])
s_b = float(e4m3.values(np.array([scale_byte], np.uint8))[0])
print(f"tensor: max|W| = {np.abs(W).max():.4g}, s_enc = 448 x 6 / max|W| = {float(s_enc):.6g} (float32)")
block_max = np.abs(V[:16]).max()
print(f"block {k}: max|x| = {block_max:.4g}, s_enc max|x| / 6 = {float(s_enc) * block_max / 6:.4g}"
      f" -> E4M3 byte 0x{scale_byte:02X} = {s_b:g}")
print("code     ", " ".join(f"{c:5X}" for c in q_nv.codes[0, 16 * k: 16 * k + 16]))
nv_codes = q_nv.codes[0, 16 * k: 16 * k + 16]
nv_decoded = q_nv.dequantize()[0, 16 * k: 16 * k + 16]
print("element  ", " ".join(f"{v:5.1f}" for v in nvfp4.values(nv_codes)))
print(f"decoded = element x s_b / s_enc = element x {s_b / float(s_enc):.4g}")
mx_error = np.sum((decoded[:16] - V[:16]) ** 2)
nv_error = np.sum((nv_decoded - V[:16]) ** 2)
print(f"squared error on these 16 weights: MXFP4 {mx_error:.3g}, NVFP4 {nv_error:.3g}")
layer_mse = {f.name: np.mean((f.encode(W).dequantize() - W) ** 2) for f in (mxfp4, nvfp4)}
print(f"mean squared error over the layer: MXFP4 {layer_mse['mxfp4']:.3g}, NVFP4 {layer_mse['nvfp4']:.3g}")
claim("NVFP4's decoded values are exactly element x E4M3 scale / s_enc",
      np.array_equal(nv_decoded, (nvfp4.values(nv_codes) * np.float32(s_b)) / s_enc))
claim("on these 16 weights NVFP4's error is the larger of the two", nv_error > mx_error)
claim("over the layer NVFP4's error is under 70 % of MXFP4's", layer_mse["nvfp4"] < 0.7 * layer_mse["mxfp4"])

# %% [markdown]
# The tensor scale is shared by the whole matrix, so the block's own scale, $s_b / s_\text{enc}$, is an E4M3 value
# (3 mantissa bits) divided by one float32: it lands within about 6 % of $\max_b|x|/6$, where MX's power of two
# is off by up to a factor 2. Within 6 % both ways: here E4M3 rounded 18.43 down to 18, which put the block's
# largest values just above 6 and clipped them, and on these 16 weights NVFP4 happens to do worse than MXFP4.
# Over the layer it is the other way round, by a clear margin: that, and half the block, is what NVFP4's extra
# quarter of a bit per weight buys.
#
# ## The Hadamard inside a block
#
# MR-GPTQ (Egiazarian et al. 2025, arXiv:2509.23202) rotates every scale block before rounding: $W R$ with
# $R = I \otimes H_b/\sqrt{b}$, the $b \times b$ Hadamard matrix ($b$ = 32 for MX, 16 for NVFP4), and the inputs
# $X R$ likewise, so $X W^\top = (XR)(WR)^\top$ exactly. A rotated weight is a ±1 combination of the 32 weights
# of its block, divided by $\sqrt{32}$: one large weight is spread over its whole block, and the block's values
# become closer to a bell curve (a sum of 32 signed terms). What FP4 gains depends on the block's **max/RMS**:
# the scale is set by the largest value, and E2M1's grid is dense near zero and sparse near the top (0.5 apart
# below 2, then 1, then 2), so a block whose largest value stands far above the others puts those others on
# the few fine steps near zero.
#
# Here are the 48 blocks of `down_proj`'s first row before and after, each scaled by its largest value as a
# max-scaled FP4 block would be (grey lines: E2M1's values):

# %%
row_blocks = W[0].reshape(-1, 32)
rotated_blocks = mr_gptq.block_rotate(W[:1], 32).reshape(-1, 32)
figures.block_values_before_after(row_blocks, rotated_blocks, mxfp4.grid, labels=("W", "W R (Hadamard per 32)"),
                                  title="down_proj, row 0 of block 11: 48 blocks of 32")
plt.show()

# %% [markdown]
# And over the whole layer: the median and the worst block's max/RMS, and the RTN error of the weights in each
# format, before and after its block rotation (the rotation is orthogonal, so the error of $W R$ is that of the
# weights it decodes to, $\hat W = Q(WR) R^\top$):

# %%
def crest(blocks):
    return np.abs(blocks).max(axis=1) / np.sqrt(np.mean(blocks**2, axis=1))


rotated = {32: mr_gptq.block_rotate(W, 32).astype(np.float32), 16: mr_gptq.block_rotate(W, 16).astype(np.float32)}
before, after = crest(W.reshape(-1, 32)), crest(rotated[32].reshape(-1, 32))
print(f"max/RMS of the blocks of 32: median {np.median(before):.2f} -> {np.median(after):.2f}, "
      f"worst {before.max():.2f} -> {after.max():.2f}   (a Gaussian block of 32: about 2.4)")
rtn_mse = {}
for fmt, block in ((mxfp4, 32), (nvfp4, 16)):
    rtn_mse[fmt.name] = [np.mean((fmt.encode(M).dequantize() - M) ** 2) for M in (W, rotated[block])]
    print(f"{fmt.name}: RTN mean squared weight error {rtn_mse[fmt.name][0]:.4g} plain, "
          f"{rtn_mse[fmt.name][1]:.4g} rotated ({rtn_mse[fmt.name][1] / rtn_mse[fmt.name][0]:.3f}x)")

# %% tags=["nbval-check-output"]
claim("after the rotation the most peaked block's max/RMS is a fifth lower than before",
      after.max() < 0.8 * before.max())
claim("yet on SmolLM2's weights it changes RTN's weight error by less than 5 % in either format",
      all(abs(rotated_err / plain - 1) < 0.05 for plain, rotated_err in rtn_mse.values()))

# %% [markdown]
# On this model's weights the rotation barely matters by itself. Their blocks are already bell-shaped (the
# median max/RMS is that of a Gaussian block), and being Q4_1 in the file, they hold no single outlier weight;
# the rotation trims the rare peaked block and leaves the typical one as it was. (On weights with heavy tails
# it matters more: exercise 3.) The rotation pays off through the *inputs*, which is where GPTQ comes in.
#
# ## 4-bit blocks on one layer: RTN, GPTQ, MR-GPTQ
#
# GPTQ (notebook 06) rounds one input column at a time and pushes each column's error onto the columns not yet
# rounded, weighted by $H = 2 X^\top X / n$. MR-GPTQ runs the same algorithm on $W R$ with $R^\top H R$. On
# `down_proj`, two input channels are thousands of times the others: an error on their weights reaches the output
# multiplied by those inputs, and GPTQ can only compensate it through other columns whose inputs are correlated
# with the massive ones, which few are. After the rotation, the massive channel is spread over the 32 rotated
# inputs of its block, all of them strongly correlated with each other, so an error on one rotated column is
# cancelled by the next ones of the same block. Measured on the held-out inputs:

# %%
def layer_errors(name):
    W_layer, out = weights[name], {}
    for fmt in ("mxfp4", "nvfp4"):
        for method in ("rtn", "gptq", "mr_gptq"):
            calib_inputs = None if method == "rtn" else X_calib[name]
            W_hat = qt.quantize_tensor(W_layer, fmt=fmt, method=method, calib=calib_inputs).dequantize()
            out[fmt, method] = relative_output_error(W_layer, W_hat, X_test[name])
    return out


live = {name: layer_errors(name) for name in (down, q_proj)}
for name, errors in live.items():
    for fmt in ("mxfp4", "nvfp4"):
        print(f"{name.split('.')[-1]:10s} {fmt}: " + "   ".join(f"{method} {errors[fmt, method]:.2e}"
                                                          for method in ("rtn", "gptq", "mr_gptq")))

# %% tags=["nbval-check-output"]
claim("GPTQ at least halves RTN's output error, on both layers, in both formats",
      all(e[f, "gptq"] < 0.5 * e[f, "rtn"] for e in live.values() for f in ("mxfp4", "nvfp4")))
claim("on down_proj (massive input channels) MR-GPTQ's error is under a third of GPTQ's, in both formats",
      all(live[down][f, "mr_gptq"] < live[down][f, "gptq"] / 3 for f in ("mxfp4", "nvfp4")))
claim("on q_proj (a norm output) MR-GPTQ still beats GPTQ, by a tenth or more",
      all(live[q_proj][f, "mr_gptq"] < 0.9 * live[q_proj][f, "gptq"] for f in ("mxfp4", "nvfp4")))

# %% [markdown]
# ## The whole model, stored: MXFP4 and NVFP4 with RTN, GPTQ and MR-GPTQ
#
# Every linear layer but the output head in each format, weights only, with RTN, GPTQ and MR-GPTQ (32
# calibration windows of 256 tokens, as the model card's GPTQ rows), and **W4A4** with RTN: the activations of
# every linear rounded per token to the same block format, as Blackwell's FP4 tensor cores take them.

# %% tags=["nbval-check-output"]
show(study["blocks"])
blocks = {row["label"]: row for row in study["blocks"]}

# %%
figures.changes_with_noise(study["blocks"], groups=["W4A4" if "W4A4" in row["label"] else "weights only"
                                                    for row in study["blocks"]],
                           title=f"4-bit blocks on SmolLM2-135M ({study['tokens']} test tokens)")
plt.show()

# %% tags=["nbval-check-output"]
mx, nv = (lambda label: blocks[f"MXFP4 {label}"]), (lambda label: blocks[f"NVFP4 {label}"])
claim("the RTN rows are the model card's MXFP4 and NVFP4 rows (same tokens, same rounding)",
      all(abs(blocks[f"{f} RTN"]["ppl"] / card[f]["ppl"] - 1) < 1e-6 for f in ("MXFP4", "NVFP4")))
claim("with RTN, MXFP4 is not clearly below FP4 with one scale per row (the card's 'FP4 E2M1 per-channel')",
      not clearly_below(mx("RTN"), card["FP4 E2M1 per-channel"]))
claim("with RTN, NVFP4's change is less than half MXFP4's, at a quarter of a bit more per weight",
      clearly_below(nv("RTN"), mx("RTN")) and nv("RTN")["delta_pct"] < 0.5 * mx("RTN")["delta_pct"])
claim("GPTQ is clearly below RTN in both formats", clearly_below(mx("GPTQ"), mx("RTN"))
      and clearly_below(nv("GPTQ"), nv("RTN")))
claim("on MXFP4, MR-GPTQ is clearly below GPTQ, with less than half its change and under 2/3 of its KL",
      clearly_below(mx("MR-GPTQ"), mx("GPTQ")) and mx("MR-GPTQ")["delta_pct"] < 0.5 * mx("GPTQ")["delta_pct"]
      and mx("MR-GPTQ")["kl"] < 2 / 3 * mx("GPTQ")["kl"])
claim("on NVFP4, MR-GPTQ's KL is under 2/3 of GPTQ's, but its perplexity is not clearly below (the bands overlap)",
      nv("MR-GPTQ")["kl"] < 2 / 3 * nv("GPTQ")["kl"] and not clearly_below(nv("MR-GPTQ"), nv("GPTQ")))
claim("every 4-bit row still costs more than 10 % of perplexity, outside the noise",
      all(row["delta_pct"] > 10 and not inside_noise(row) for row in study["blocks"]))
claim("W4A4 with RTN is far worse than the same weights alone: more than twice their perplexity change",
      all(row("W4A4 RTN")["delta_pct"] > 2 * row("RTN")["delta_pct"] for row in (mx, nv)))

# %% [markdown]
# What the whole model says:
#
# * **MXFP4 with RTN is poor on this model**: its perplexity rises by about two thirds, no better than FP4 with
#   one scale per row (the model card). The power-of-two scale per 32 costs what notebook 01 predicted: a step
#   up to twice too coarse, and about half the blocks clipped at the top. **NVFP4**'s E4M3 scale per 16 loses
#   about a third as much with the same rounding.
# * **GPTQ** helps both formats, clearly. **MR-GPTQ** (the block Hadamard, then GPTQ) helps MXFP4 again, by more
#   than half of what GPTQ left, in line with the layer measured live, and brings MXFP4 close to NVFP4's GPTQ
#   and MR-GPTQ rows. On NVFP4, MR-GPTQ lowers the KL by more than a third; its perplexity is lower too, by less than the strict test above can confirm.
# * **W4A4** with RTN, the activations rounded per token to the same 4-bit blocks as Blackwell's FP4 tensor cores
#   take them, is much worse than the weights alone: the massive activation channels meet 15 values per block.
#   Making W4A4 work takes what notebook 08 showed for INT4 (rotations of the activations, GPTQ for the
#   weights); MR-GPTQ's activation rotation is not applied here.
# * None of these rows is inside the noise: at 4 bits every format and method still costs SmolLM2 more than
#   10 % of perplexity. Small models lose more to 4-bit rounding than large ones, and the papers measure models
#   of billions of parameters; here the gaps between methods are the lesson, not the absolute figures.
#
# ## Shipping it: a compressed-tensors checkpoint
#
# A quantized model is only useful once a server can load it. vLLM, and transformers with the
# `compressed-tensors` package, read the layout that llm-compressor writes: an ordinary Hugging Face directory
# whose `config.json` says which linears are quantized and how (`quantization_config`), and whose
# `model.safetensors` stores, for each quantized linear, the codes and scales instead of the float weight.
# `qtutor export-compressed-tensors` (or `export_compressed_tensors` below) writes it from qtutor's own codes:
# INT4 and INT8 weights (`W4A16`, `W8A16`: codes packed into int32 words), FP8 (`FP8` with a calibrated scale
# for each layer's input, `FP8_DYNAMIC` with one per token at run time) and NVFP4 weights (`NVFP4A16`).
#
# Here SmolLM2 goes out as W4A16 with RTN, groups of 64 (its 576-wide rows are not a multiple of llm-compressor's
# usual 128), into a temporary directory.

# %%
import json
import tempfile
from pathlib import Path

from safetensors import safe_open
from qtutor.model.export_compressed import export_compressed_tensors

workdir = tempfile.TemporaryDirectory()
out = Path(workdir.name) / "smollm2-w4a16"
shipped = export_compressed_tensors(smol, smol_tok, out, "W4A16", group_size=64, progress=False)
print(sorted(p.name for p in out.iterdir()))
print(f"{shipped['bytes'] / 2**20:.0f} MiB of safetensors, {shipped['layers']} linears at "
      f"{shipped['bits_per_weight']:.2f} bits per weight; the embedding stays float32 (tied to the output)")

# %% tags=["nbval-check-output"]
config = json.loads((out / "config.json").read_text())["quantization_config"]
print("format:", config["format"], "| ignore:", config["ignore"])
weights_args = config["config_groups"]["group_0"]["weights"]
print({key: weights_args[key] for key in ("num_bits", "type", "symmetric", "strategy", "group_size")})
layer = "model.layers.0.self_attn.q_proj"
with safe_open(out / "model.safetensors", "pt") as stored:
    tensors = {key.split(".")[-1]: stored.get_tensor(key) for key in stored.keys() if key.startswith(layer + ".")}
for key, tensor in tensors.items():
    print(f"{layer}.{key:14s} {str(tensor.dtype):12s} {tuple(tensor.shape)}")

# %% [markdown]
# `weight_packed` holds 576 × 4 bits = 72 int32 words a row; `weight_scale` one float per group of 64 (9 a
# row); `weight_shape` the original shape. Each word carries 8 codes, the first in the lowest 4 bits, each stored
# as q + 8 so that the signed codes −8 … 7 become the nibbles 0 … 15. Decode the first word of row 0 by hand and
# multiply by the group's scale: these are the weights the model computes with.

# %% tags=["nbval-check-output"]
word = int(tensors["weight_packed"][0, 0]) & 0xFFFFFFFF
codes = np.array([(word >> (4 * j)) & 0xF for j in range(8)]) - 8
by_hand = codes * float(tensors["weight_scale"][0, 0])
model_weight = qt.model.get_weight(qt.model.find_layer(smol, layer))[0, :8]
print("codes:", codes.tolist())
claim("the first 8 weights of the row, decoded by hand from one int32 word and one scale, are exactly the "
      "model's", np.array_equal(by_hand.astype(np.float32), model_weight))

# %% [markdown]
# Now the reader's side: transformers loads the directory (compressed-tensors does the decoding) and the loaded
# model is scored on the same tokens as qtutor's own quantized model.

# %%
import contextlib
import io

from transformers import AutoModelForCausalLM
from qtutor.eval.perplexity import score

from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # the loader's own progress bars are noise in a saved notebook
with contextlib.redirect_stderr(io.StringIO()):  # (compressed-tensors places the modules on the first call)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    theirs = score(loaded, smol_tok, max_tokens=1024, progress=False)
ours = score(smol, smol_tok, max_tokens=1024, progress=False)
print(f"qtutor's model   perplexity {ours.ppl:.3f} ± {ours.ppl_stderr:.2f}\n"
      f"loaded checkpoint perplexity {theirs.ppl:.3f} ± {theirs.ppl_stderr:.2f}   (on {ours.n_tokens} tokens)")

# %% tags=["nbval-check-output"]
claim("the checkpoint, loaded by transformers, scores within 0.5 % of qtutor's own quantized model",
      abs(theirs.ppl / ours.ppl - 1) < 0.005)
claim("token by token the two agree to 1e-3 nats (the same weights; only the order of float sums can differ)",
      np.abs(theirs.nll - ours.nll).max() < 1e-3)
shipped["report"].restore()  # SmolLM2 back to float for what follows
del loaded
workdir.cleanup()

# %% [markdown]
# What the export refuses, with the reason and without writing anything: methods whose result these formulas
# cannot hold (MR-GPTQ's codes live in a rotated basis; HQQ's zero points are real numbers; QuIP#'s are lattice
# codes; LLM.int8() and the rotations change how the model runs), and act-order permutations. The NVFP4 reader
# decodes in bfloat16: on a CPU, load an `NVFP4A16` directory with
# `quantization_config=CompressedTensorsConfig(dequantize=True)`.
#
# ## Exercises
#
# 1. **E5M2 activations.** FP8 has a second variant, E5M2: two more binades of range, one mantissa bit less.
#    Rerun `activation_errors` with `"fp8_e5m2"` on both inputs. Which variant would you give activations at
#    inference, and why does training use E5M2 for gradients?
# 2. **A scale that never clips.** Replace MXFP4's rule by the smallest power of two $X$ with $6X \ge \max|V|$
#    (the spec's $X$, doubled in the blocks that clip), on the layer `W`. Does the layer's mean squared error go
#    up or down? (Round with `mxfp4.cast` and `mxfp4.values`.)
# 3. **Heavy tails.** On a clearly synthetic matrix of Student-t weights (3 degrees of freedom, 576 x 1536, seed
#    0), compare the max/RMS of the blocks and MXFP4's RTN error before and after the block rotation. Where does
#    the rotation help more: there or on SmolLM2?

# %% tags=["solution"]
# 1. E5M2 against E4M3 on both inputs
for name in (down, q_proj):
    ordinary = ~outlier if name == down else slice(None)
    for fmt in ("fp8_e4m3", "fp8_e5m2"):
        e = activation_errors(X_test[name], weights[name], fmt, ordinary)
        print(f"{name.split('.')[-1]:10s} {fmt}: token {e['token']:.4f}, output {e['output']:.2e}")
print("E4M3: twice E5M2's precision; a token's scale already brings its range into E4M3's, so activations at\n"
      "inference take E4M3. Gradients span far more binades than one scale can cover, hence E5M2 there.")

# %% tags=["solution"]
# 2. the smallest power of two X with 6X >= max|V|: the spec's X, or twice it where the spec clips
def mxfp4_error(W, clip=True):
    G = W.reshape(-1, 32)
    X_block = mxfp4.encode(G).scales.reshape(-1, 1)  # the spec's 2^(floor(log2 max|V|) - 2)
    if not clip:
        X_block = np.where(np.abs(G).max(axis=1, keepdims=True) > 6 * X_block, 2 * X_block, X_block)
    G_hat = mxfp4.values(mxfp4.cast(G / X_block)) * X_block
    return float(np.mean((G_hat - G) ** 2))


print(f"MXFP4 mean squared error on the layer: the spec's rule {mxfp4_error(W):.4g}, never clipping "
      f"{mxfp4_error(W, clip=False):.4g}")

# %% tags=["solution", "nbval-check-output"]
claim("never clipping is worse on this layer: clipping one value costs less than doubling the step of the block",
      mxfp4_error(W, clip=False) > mxfp4_error(W))

# %% tags=["solution"]
# 3. a clearly synthetic heavy-tailed matrix (not the model's weights)
T = np.random.default_rng(0).standard_t(3, size=(576, 1536)).astype(np.float32)
T_rotated = mr_gptq.block_rotate(T, 32).astype(np.float32)
error_T = [np.mean((mxfp4.encode(M).dequantize() - M) ** 2) for M in (T, T_rotated)]
print(f"Student-t: median max/RMS {np.median(crest(T.reshape(-1, 32))):.2f} -> "
      f"{np.median(crest(T_rotated.reshape(-1, 32))):.2f}; MXFP4 RTN error {error_T[1] / error_T[0]:.2f}x after "
      "the rotation")
print(f"SmolLM2 down_proj: {rtn_mse['mxfp4'][1] / rtn_mse['mxfp4'][0]:.2f}x")

# %% [markdown]
# ## What you learned
#
# * FP8 runs natively from Ada and Hopper, MXFP4/MXFP6/MXFP8 and NVFP4 from Blackwell; elsewhere they are
#   storage formats, and on a CPU fake quantization reproduces the tensor core's products exactly.
# * With a scale per token, E4M3 keeps the small activation channels that INT8 loses to an outlier channel, and
#   INT8 keeps the largest values more finely; on SmolLM2, W8A8 in FP8 is no better than in INT8.
# * MXFP4 scales 32 weights by a power of two (E8M0) and clips the top of about half its blocks; NVFP4 scales 16
#   by an E4M3 byte under an FP32 tensor scale and loses less. GPTQ beats RTN on both, and MR-GPTQ's block
#   Hadamard helps most where a layer's inputs have massive channels.
# * A compressed-tensors checkpoint stores those same codes and scales (INT codes packed in int32 words, E4M3
#   bytes, NVFP4 nibbles with their E4M3 block scales and the tensor's s_enc) beside a `quantization_config`;
#   transformers and vLLM load it, and it computes what qtutor's fake-quant model computes.
#
# Next: [12 · Below 3 bits](12_below_3_bits.ipynb).
