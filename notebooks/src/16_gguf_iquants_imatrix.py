# %% [markdown]
# # 16 · GGUF below 4 bits: i-quants and the importance matrix
#
# Notebook 10 ended at Q2_K, llama.cpp's smallest K type. Below it, llama.cpp's users reach for the **i-quants**
# (IQ3_XXS, IQ2_XXS, IQ1_S ...) and meet the **importance matrix** (`llama-imatrix`, `llama-quantize --imatrix`)
# and its questions: do I need one, which text should feed it, what happens if it comes from the wrong text?
# This notebook opens an i-quant block byte by byte, shows the idea behind its grid, then answers those questions
# on the real model, SmolLM2-135M, one layer live and the whole model from stored measurements.
#
# qtutor's i-quants are byte-identical to ggml's C quantizer (tested against ggml's own bytes, and against
# `llama-quantize`'s files for whole models: `tools/llamacpp_quantize.py`), so what you see is what llama.cpp
# stores.

# %%
import warnings

import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.formats import ggml
from qtutor.formats.ggml import iquants
from qtutor.formats.ggml.lattice import grid
from qtutor.metrics import relative_output_error
from qtutor.methods.gguf import anatomy, mixes
from qtutor.model.imatrix import collect
from qtutor.viz import figures

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
smol, smol_tok = qt.load_model("smollm2")

# %% [markdown]
# ## The types
#
# | type | bits/weight | what a block stores |
# |---|---|---|
# | IQ4_XS | 4.25 | 16 non-uniform levels per weight, a 6-bit scale per 32 (notebook 10) |
# | IQ3_S, IQ3_XXS | 3.44, 3.06 | a grid index per **4** weights (512 or 256 points), signs apart, a scale per 32 |
# | IQ2_S, IQ2_XS, IQ2_XXS | 2.56, 2.31, 2.06 | a grid index per **8** weights (1024, 512, 256 points), signs apart |
# | IQ1_M, IQ1_S | 1.75, 1.56 | a grid index per 8 weights on 2048 ternary points, a shift ±1/8 |
# | TQ2_0, TQ1_0 | 2.06, 1.69 | ternary weights −1, 0, +1 times one scale per 256 (BitNet's numbers) |
#
# A *mix* of the same name (`IQ2_XS`, ...) gives most tensors that type and a few sensitive ones more bits, as
# Q4_K_M does; llama.cpp refuses to make the IQ1 and IQ2 mixes (and IQ3_XXS) without an importance matrix.

# %% tags=["nbval-check-output"]
for name in ("IQ4_XS", "IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "TQ2_0", "TQ1_0"):
    weights, size, bpw = ggml.block_info(name)
    points = f"{len(grid(name).levels):5d} grid points of {grid(name).dims}" if name in mixes.REQUIRES_IMATRIX + (
        "IQ3_S",) else ""
    print(f"{name:8s} {size:3d} bytes per {weights} weights  {bpw:6.4f} bits/weight  {points}")

# %% [markdown]
# ## Why a grid, and why the signs apart
#
# At 2 bits a weight has 4 levels. Rounding 8 weights one at a time to 3 magnitudes and a sign allows
# 3⁸ = 6,561 magnitude patterns (12.7 bits for 8 weights), and most of them never describe a real group of
# weights. IQ2_XXS keeps the **256** patterns that groups of real (normalised) weights land near most often, so
# one 8-bit index describes 8 magnitudes: one bit per weight. The points are chosen near the **E8 lattice**, the
# densest packing of spheres in 8 dimensions, whose points cover space more evenly than a cube of independent
# levels: at the same bits the nearest point is closer on average. QuIP# (Tseng et al. 2024) builds its codebook
# on E8 for the same reason.
#
# The grid holds magnitudes (8, 25, 43), so the quantizer matches |x| against it and stores the signs as bits:
# **7 sign bits for 8 weights**. E8's points have an even number of minus signs, and so must a stored group;
# when a group's count is odd, the quantizer gives up the sign of its least important weight, where the error
# costs least. Each column of the picture is one grid point, sorted by length: most points are short (many 8s),
# few reach 43, the shape of a bell-shaped weight distribution.

# %% tags=["nbval-check-output"]
points = grid("IQ2_XXS").values
print(f"IQ2_XXS: {len(points)} points of {points.shape[1]} magnitudes in {sorted(set(points.ravel().tolist()))}, "
      f"{len(points) / 3 ** 8:.1%} of the {3 ** 8} patterns")
counts = {int(m): int((points == m).sum()) for m in (8, 25, 43)}
print("how often each magnitude appears over all coordinates:", counts)
claim("small magnitudes dominate the grid, as they dominate real weights", counts[8] > counts[25] > counts[43])

# %%
figures.grid_points(points, title="IQ2_XXS's 256 grid points (8 magnitudes each)")
plt.show()

# %% [markdown]
# ## One IQ2_XXS super-block, byte by byte
#
# 66 bytes hold 256 weights: an fp16 scale d, then for every 32 weights two 32-bit words. The first word is four
# 8-bit grid indices (one per group of 8); the second is four 7-bit sign masks and, in its top 4 bits, the
# sub-block scale l. A weight is d (0.5 + l) / 4 × its grid magnitude × its sign. Here are the first 256 weights
# of a real row of SmolLM2 (layer 5's `down_proj`, rows 1536 long: six super-blocks), with an importance
# matrix from its calibration inputs, and one group decoded by hand:

# %%
layer = "model.layers.5.mlp.down_proj"
W = qt.model.get_weight(qt.model.find_layer(smol, layer))  # (576, 1536)
calib = qt.data.calibration(8, 256, source="wiki", tokenizer=smol_tok)
held_out = qt.data.calibration(8, 256, source="wiki", seed=1, tokenizer=smol_tok)
X_calib = qt.model.capture_inputs(smol, calib, [layer])[layer]
X_test = qt.model.capture_inputs(smol, held_out, [layer])[layer]
importance = ggml.importance_matrix(X_calib)  # mean x_j^2 per input column: llama.cpp's statistic
block = ggml.quantize(W[:1, :256], "IQ2_XXS", importance[:256])[0]
fig = figures.block_bytes(anatomy.byte_roles("IQ2_XXS"), block, title="one IQ2_XXS super-block: 66 bytes")
plt.show()

# %% tags=["nbval-check-output"]
group = anatomy.explain_iq2_xxs_group(block, 2)
print(f"group 2: grid index {group['grid_index']}, magnitudes {group['magnitudes']}")
print(f"stored sign bits {group['stored_signs']} + the parity sign {group['parity_sign']}: "
      f"{sum(group['negative'])} minus signs (even)")
print(f"sub-block scale l = {group['l']}: each magnitude times d (0.5 + l) / 4")
rebuilt = np.float32(group["scale"]) * np.asarray(group["magnitudes"], np.float32) * np.where(group["negative"], -1, 1)
claim("the hand-decoded group is what the dequantizer returns", np.array_equal(rebuilt.astype(np.float32),
                                                                             np.asarray(group["values"], np.float32)))
claim("the count of minus signs is even", sum(group["negative"]) % 2 == 0)

# %% [markdown]
# ## The importance matrix, on one layer
#
# A weight's rounding error reaches the layer's output multiplied by its input: for y = W x the expected squared
# output error is about Σⱼ E[xⱼ²] (Wᵢⱼ − Ŵᵢⱼ)². llama.cpp's **importance matrix** is that E[xⱼ²], one number per
# input column of every linear layer, averaged over calibration text; `--imatrix` weights every block's fit by it
# (the diagonal of GPTQ's Hessian, without GPTQ's error feedback). It matters most where inputs are uneven, and
# SmolLM2's `down_proj` inputs are very uneven (notebook 05: channels thousands of times the median).
#
# Below, the same layer in three types, each without and with the importance matrix, measured by the relative
# output error on **held-out** inputs (other wiki windows than the calibration's). llama.cpp will not make
# IQ3_XXS or IQ2_XS without a matrix; the closest it can be asked for is a *uniform* one, every column equally
# important.

# %%
def layer_errors(types=("Q2_K", "IQ3_XXS", "IQ2_XS")):
    uniform = np.ones_like(importance)
    out = {}
    for name in types:
        plain = None if name == "Q2_K" else uniform  # Q2_K has its own unweighted fit
        for label, matrix in (("without", plain), ("with", importance)):
            W_hat = ggml.dequantize(ggml.quantize(W, name, matrix), name, W.shape)
            out[name, label] = relative_output_error(W, W_hat, X_test)
    return out


errors = layer_errors()
for name in ("Q2_K", "IQ3_XXS", "IQ2_XS"):
    print(f"{name:8s} output error without {errors[name, 'without']:.4f}   with the imatrix {errors[name, 'with']:.4f}"
          f"   ({errors[name, 'with'] / errors[name, 'without']:.2f}x)")

# %% tags=["nbval-check-output"]
claim("with the importance matrix every type's held-out output error is lower",
      all(errors[n, "with"] < errors[n, "without"] for n in ("Q2_K", "IQ3_XXS", "IQ2_XS")))
claim("IQ3_XXS (3.06 bits) beats Q2_K (2.63 bits) and IQ2_XS (2.31), with the matrix",
      errors["IQ3_XXS", "with"] < min(errors["Q2_K", "with"], errors["IQ2_XS", "with"]))

# %% [markdown]
# On one layer the matrix buys most where the fit had no weights at all (Q2_K's unweighted search); the i-quants'
# "uniform" fit already weights each weight by its own size, so the matrix adds less here. Across 210 layers the
# small gains compound, as the whole model shows next.
#
# ## The whole model
#
# Quantizing all of SmolLM2 to each mix and scoring it takes about a minute a mix here, more than this
# notebook's budget for four mixes times four matrices, so the study was measured once by
# `python tools/iquants_smollm2.py` (45 minutes on 2 cores) and ships as data. Same tokens and windows as the
# model card (notebook 15): the first 4096 test tokens, windows of 512. Each mix is made
#
# * **without** a matrix (the i-quants: a uniform one, since llama.cpp refuses them without),
# * with one from the **wiki** train split (text like the evaluation's),
# * with one from the **news** text (other text),
# * with one from the **evaluated text itself**, the mistake llama.cpp PR 4930 warns about.
#
# One thing to know first: SmolLM2's hidden size is 576, not a multiple of 256, so every tensor but `ffn_down`
# falls back to IQ4_NL (the i-quant mixes) or Q4_0 (Q2_K, Q3_K_M) — notebook 10's lesson. The low-bit types land
# on the 30 `ffn_down` tensors only, a fifth of the weights, and the bits per weight below count everything.

# %% tags=["nbval-check-output"]
study = qt.zoo.iquants("smollm2")
base = study["float"]
print(f"float: perplexity {base['ppl']:.2f} ± {base['ppl_stderr']:.2f} on {study['tokens']} tokens")
print(f"{'mix':8s} {'imatrix':8s} {'bits/w':>6s} {'perplexity':>15s} {'change':>16s} {'KL':>7s}")
for row in study["imatrix_study"]:
    print(f"{row['mix']:8s} {str(row['imatrix']):8s} {row['bits_per_weight']:6.3f} {row['ppl']:7.2f} ± "
          f"{row['ppl_stderr']:<5.2f} {qt.notebook.percent(row['delta_pct']):>8s} ± {row['delta_pct_stderr']:<4.1f}"
          f" {row['kl']:7.4f}")
found = {(row["mix"], row["imatrix"]): row for row in study["imatrix_study"]}

# %%
no_matrix = {"Q2_K": None, "Q3_K_M": None, "IQ3_XXS": "uniform", "IQ2_XS": "uniform"}
for mix, plain in no_matrix.items():
    gain = found[mix, plain]["kl"] - found[mix, "wiki"]["kl"]
    print(f"{mix:8s} the wiki matrix lowers the KL by {gain:.4f} nats per token "
          f"({found[mix, 'wiki']['kl'] / found[mix, plain]['kl']:.2f}x)")

# %% [markdown]
# What to read in it (the claims below are checked on the stored figures):
#
# * **Without a matrix the i-quants are unusable, with one they work.** A uniform matrix leaves IQ2_XS several
#   times worse than float and IQ3_XXS far behind Q3_K_M; weighted by the wiki matrix, both come within reach of
#   the K mixes of their size. This is why llama.cpp refuses them without one. Q2_K, whose unweighted fit is a
#   different search, gains less but clearly.
# * **Other ordinary text does as well**: the news matrix lands within the noise of the wiki one. What the matrix
#   captures, which input channels are large, is a property of the model more than of the text.
# * **The evaluated text flatters.** A matrix computed on the very tokens being scored gives the best figure of
#   the three for every low-bit mix, because it tunes the rounding to those tokens: a fit, not a measurement.
#   The API warns when it sees it (the cell after the claims).

# %% tags=["nbval-check-output"]
def better(mix, matrix, than):
    a, b = found[mix, matrix], found[mix, than]
    return a["kl"] < b["kl"] and a["ppl"] < b["ppl"]


low_bit = ("Q2_K", "IQ3_XXS", "IQ2_XS")
claim("with the wiki matrix, Q2_K, IQ3_XXS and IQ2_XS beat their versions without one (KL and perplexity)",
      all(better(mix, "wiki", no_matrix[mix]) for mix in low_bit))
claim("the news matrix is within one standard error of the wiki matrix's perplexity, for all four mixes",
      all(abs(found[m, "news"]["ppl"] - found[m, "wiki"]["ppl"]) < found[m, "wiki"]["ppl_stderr"] for m in no_matrix))
claim("the matrix from the evaluated text gives the best KL and perplexity of the three matrices at low bits",
      all(better(mix, "test", "wiki") and better(mix, "test", "news") for mix in low_bit))

# %%
evaluated = qt.data.tokens("test", smol_tok)[:512].reshape(2, 256)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    collect(smol, evaluated, tokenizer=smol_tok)
print(str(caught[0].message)[:400])

# %% [markdown]
# ## Every mix on one picture
#
# Bits per weight (the whole model) against perplexity, with the wiki matrix wherever a type takes one, next
# to the K-quant mixes of notebook 10. On SmolLM2 every mix stores between 4.8 and 6.2 bits per weight: the
# 576-wide tensors fall back to IQ4_NL or a legacy type, and the tied embedding, a fifth of the model, to Q8_0,
# so the names say what `ffn_down` gets. The order still shows: at each step down (IQ4 → IQ3 → IQ2 → IQ1), the
# loss grows faster than the bytes shrink. The ternary mixes sit far off the top: TQ1_0 and TQ2_0 are for models
# *trained* ternary (BitNet b1.58); rounded after training, a model loses what it knew (below). (They store the
# same trits, packed differently, so their perplexities are identical.)

# %%
card = qt.zoo.measurements("smollm2")
k_mixes = [{**row, "label": row["label"], "method": "K-quant mix"} for row in card["gguf"]
           if row["label"] not in ("Q2_K", "Q3_K_M")]
low = [{**row, "label": row["mix"], "method": "i-quant mix" if row["mix"].startswith("IQ") else
        "ternary mix" if row["mix"].startswith("TQ") else "K-quant mix"} for row in study["mixes"]]
shown = [p for p in k_mixes + low if p["ppl"] < 20 * base["ppl"]]
figures.pareto(shown, title=f"SmolLM2-135M: every llama.cpp mix ({study['tokens']} test tokens)",
               reference=base["ppl"])
plt.show()

# %% tags=["nbval-check-output"]
by_mix = {row["mix"]: row for row in study["mixes"]}
q4_k_m = next(row for row in card["gguf"] if row["label"] == "Q4_K_M")
claim("IQ4_XS is smaller than Q4_K_M here, and loses more", by_mix["IQ4_XS"]["bits_per_weight"] < q4_k_m["bits_per_weight"]
      and by_mix["IQ4_XS"]["delta_pct"] > q4_k_m["delta_pct"])
claim("both ternary mixes break the model (perplexity over 10x float's)",
      min(by_mix["TQ1_0"]["ppl"], by_mix["TQ2_0"]["ppl"]) > 10 * base["ppl"])

# %% [markdown]
# ## Ternary weights on a model that was not trained for them
#
# TQ1_0 and TQ2_0 store BitNet b1.58's numbers, −1, 0, +1 times a scale, but round a float model to them by
# its maximum per 256 weights, so most weights of a bell-shaped block become 0. BitNet rounds by the **mean**
# magnitude of the whole matrix (γ = mean |W|, t = clip(round(W/γ), −1, 1)), which keeps the tails, and it
# *trains* through that rounding. On a layer of SmolLM2, neither rule saves a float-trained matrix:

# %% tags=["nbval-check-output"]
trits, gamma = iquants.absmean_ternary(W)
tq = ggml.dequantize(ggml.quantize(W, "TQ1_0"), "TQ1_0", W.shape)
ternary = {"TQ1_0 (max per 256)": tq, "BitNet absmean (one scale)": trits * gamma}
for label, W_hat in ternary.items():
    print(f"{label:28s} zeros {np.mean(W_hat == 0):.0%}   output error {relative_output_error(W, W_hat, X_test):.2f}")
claim("absmean rounding keeps more weights non-zero than TQ1_0's max rounding",
      np.mean(trits == 0) < np.mean(tq == 0))
claim("either way the layer's output error is above 10 %",
      min(relative_output_error(W, W_hat, X_test) for W_hat in ternary.values()) > 0.1)

# %% [markdown]
# ## Exercises
#
# 1. Which columns did the importance matrix protect? Sort `importance` and compare the error of the 16 most
#    important input columns of the IQ2_XS layer (`W - W_hat` restricted to them) without and with the matrix.
# 2. The news matrix, on the layer: compute it from `qt.data.calibration(8, 256, source="news", ...)` inputs and
#    measure IQ2_XS's held-out error with it. Where does it land between the uniform and the wiki matrix?
# 3. IQ1_S on the layer: quantize with the matrix and compare its output error with IQ2_XXS's. How many bits per
#    weight does each spend (`ggml.block_info`)?

# %% tags=["solution", "nbval-check-output"]
# 1. the 16 most important columns: their rounding error shrinks with the matrix, at the others' expense
top = np.argsort(importance)[-16:]
for label, matrix in (("uniform", np.ones_like(importance)), ("imatrix", importance)):
    W_hat = ggml.dequantize(ggml.quantize(W, "IQ2_XS", matrix), "IQ2_XS", W.shape)
    share = np.square(W - W_hat)[:, top].sum() / np.square(W - W_hat).sum()
    print(f"{label:8s} squared error in the 16 most important columns: {share:.1%} of the layer's")

# %% tags=["solution"]
# 2. a matrix from other text
X_news = qt.model.capture_inputs(smol, qt.data.calibration(8, 256, source="news", tokenizer=smol_tok), [layer])[layer]
news = ggml.importance_matrix(X_news)
W_hat = ggml.dequantize(ggml.quantize(W, "IQ2_XS", news), "IQ2_XS", W.shape)
print(f"IQ2_XS: uniform {errors['IQ2_XS', 'without']:.4f}, news {relative_output_error(W, W_hat, X_test):.4f}, "
      f"wiki {errors['IQ2_XS', 'with']:.4f}")

# %% tags=["solution"]
# 3. IQ1_S against IQ2_XXS
for name in ("IQ2_XXS", "IQ1_S"):
    W_hat = ggml.dequantize(ggml.quantize(W, name, importance), name, W.shape)
    print(f"{name:8s} {ggml.block_info(name)[2]:.4f} bits/weight, output error {relative_output_error(W, W_hat, X_test):.4f}")

# %% [markdown]
# ## What you learned
#
# * Below 3 bits, llama.cpp rounds **groups** of 4 or 8 weights to the nearest point of a small grid near the E8
#   lattice, with the signs stored apart (7 bits for 8: the count of minus signs is even).
# * The **importance matrix** weights every block's fit by the mean squared input of each column; it is what makes
#   2-bit types usable, llama.cpp refuses IQ1/IQ2 without it, and it barely depends on which ordinary text fed it.
# * Never compute it on the text you evaluate on: the figure then measures the fit to that text.
# * Ternary formats need ternary-trained models; rounding a float model to three values breaks it.
