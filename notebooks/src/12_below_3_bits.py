# %% [markdown]
# # 12 · Below 3 bits: vectors, lattices and incoherence
#
# At 4 bits every method of the course works; at 3 bits rounding starts to hurt; at 2 bits rounding one weight at
# a time breaks a model. The methods that reach 2 bits (QuIP#, AQLM, VPTQ) change what is rounded: **vectors** of
# 8 weights at once, onto points chosen to cover where weight vectors actually are, after a **rotation** that
# makes every weight look like every other. This notebook takes the four ideas one at a time, each on SmolLM2:
#
# 1. why a scalar grid fails at 2 bits (the grid picture),
# 2. vectors and lattices (codebook coverage, the E8 lattice),
# 3. incoherence (a randomized rotation pulls the outliers in),
# 4. AQLM's beam search, stepped on one group of 8 weights,
#
# then every method on one layer live, and the model from stored measurements.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor import formats
from qtutor.formats.codebook import e8_one_bit_table, e8p_table, nearest_rows
from qtutor.methods import aqlm, rotation
from qtutor.methods.quip_sharp import incoherent
from qtutor.methods.vptq import kmeans
from qtutor.metrics import relative_output_error
from qtutor.viz import figures

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
smol, smol_tok = qt.load_model("smollm2")

# %% [markdown]
# ## 1. The grid picture: four levels for a bell
#
# INT2 gives a group 4 levels, spread evenly from its smallest weight to its largest. A group of weights is
# bell-shaped: most weights sit near the middle, a few in the tails, and the tails decide the range. With 4
# levels the step is a third of the range, so the many weights near the middle all fall on the two inner levels
# and lose their differences. Here is a real group, the first 64 weights of a row of SmolLM2's layer 10 `q_proj`,
# at 2, 3 and 4 bits (RTN, asymmetric, one scale and zero point for the 64):

# %%
layer = "model.layers.10.self_attn.q_proj"
W = qt.model.get_weight(qt.model.find_layer(smol, layer))  # (576, 576)
group = W[:1, :64]
rounded = {f"INT{b}": qt.quantize_tensor(group, f"int{b}", "rtn", 64).dequantize() for b in (2, 3, 4)}
figures.scalar_grids(group, rounded, title="one group of 64 weights of SmolLM2 (layer 10 q_proj), rounded")
plt.show()

# %%
rms = np.sqrt(np.mean(group ** 2))
for label, values in rounded.items():
    error = np.sqrt(np.mean((values - group) ** 2))
    print(f"{label}: error per weight (rms) {error:.4f} = {error / rms:.0%} of the weights' own rms")
levels, counts = np.unique(rounded["INT2"], return_counts=True)
print("INT2 levels used:", np.round(levels, 4), "weights on each:", counts)

# %% tags=["nbval-check-output"]
errors = {label: np.sqrt(np.mean((values - group) ** 2)) for label, values in rounded.items()}
claim("at 2 bits the rounding error is over a third of the weights' own size", errors["INT2"] > rms / 3)
claim("each bit from 2 to 4 cuts the error by more than 1.5x", errors["INT2"] > 1.5 * errors["INT3"] > 2.25 * errors["INT4"])

# %% [markdown]
# The noise a 2-bit grid adds is comparable to the signal, in every group of every layer, and a network has no
# way to average it out. Two ways forward: spend the levels where the weights are (NF4's idea, notebook 09; any4
# learns them), or stop rounding weights one at a time.
#
# ## 2. Vectors and lattices
#
# Take the weights two at a time. At 2 bits per weight a pair has 4 bits: **16 codewords** in the plane. Two
# independent 4-level grids give the 4 × 4 square; but the pairs form a round cloud, denser in the middle, and
# the square wastes its corners. A codebook of 16 points placed by k-means on the cloud covers it better at the
# same bits. Below: pairs of Gaussian numbers (what a layer's weights look like after the rotation of section
# 3), coloured by their nearest codeword.

# %%
pairs = np.random.default_rng(0).standard_normal((4000, 2)).astype(np.float32)
levels_1d = np.array([-1.510, -0.4528, 0.4528, 1.510], np.float32)  # the best 4 levels for a unit Gaussian (Lloyd-Max)
square = np.stack(np.meshgrid(levels_1d, levels_1d), axis=-1).reshape(-1, 2)
learned, _ = kmeans(pairs, np.ones(len(pairs)), 16)
figures.codebook_cells(pairs, {"4 x 4 grid (2 bits per weight)": square, "16 learned codewords (2 bits per weight)":
                              learned}, title="the same 4 bits per pair, two ways to spend them")
plt.show()


# %% tags=["nbval-check-output"]
def pair_mse(codewords):
    return float(np.mean((pairs - codewords[nearest_rows(pairs, codewords)[0]]) ** 2))


claim("16 learned codewords beat the 4 x 4 grid on Gaussian pairs by more than 5 %",
      pair_mse(learned) < 0.95 * pair_mse(square))

# %% [markdown]
# In more dimensions the gain grows: in 8 dimensions a ball of points fills a round cloud far better than a cube.
# The best known packing there is the **E8 lattice**: all points of 8 integers or 8 half-integers whose sum is
# even. QuIP#'s **E8P** codebook takes 2¹⁶ = 65,536 points of E8 (shifted by ¼) inside a ball: 16 bits for 8
# weights, 2 bits per weight. E8's 240 shortest vectors (its *roots*), projected onto a special plane (the
# Coxeter plane), make the famous picture on the right: 8 rings of 30. On the left, all 65,536 E8P points
# projected the same way.

# %%
plane = figures.coxeter_plane()
table = e8_one_bit_table()
roots = table[(table ** 2).sum(axis=1) == 2]
fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
figures.lattice_projection(e8p_table(), plane, ax=axes[0], title="E8P's 65,536 points (QuIP#, 2 bits per weight)")
figures.lattice_projection(roots, plane, ax=axes[1], highlight=roots, title="E8's 240 roots: 8 rings of 30")
plt.show()

# %% tags=["nbval-check-output"]
radii, per_ring = np.unique(np.round(np.linalg.norm(roots @ plane.T, axis=1), 4), return_counts=True)
print(f"{len(roots)} roots on {len(radii)} rings; roots per ring: {sorted(set(per_ring.tolist()))}")
print(f"{'format':14s} {'weights per code':>16s} {'codewords':>12s} {'code bits per weight':>20s}")
for name, dims, count in (("INT2", 1, 4), ("pairs of 16", 2, 16), ("E8P", 8, 2 ** 16), ("E8P + E8 residual", 8, 2 ** 24),
                          ("AQLM 2x8", 8, 2 ** 16), ("VPTQ v8 2-bit", 8, 2 ** 16), ("VPTQ v4 3-bit", 4, 2 ** 12)):
    print(f"{name:18s} {dims:12d} {count:12,d} {np.log2(count) / dims:20.2f}")

# %% [markdown]
# bits per weight = log₂(codewords) / weights per code. What the codes cost is only part of it: a learned table
# (AQLM's, VPTQ's) is stored with every layer and counted in the bits per weight the methods report; E8P's table
# is fixed, part of the format, like NF4's 16 levels. How much closer does E8P come on Gaussian weights, against
# INT2 in groups of 64 (which spends 0.28 more bits on its scales and zero points)?

# %% tags=["nbval-check-output"]
gauss = np.random.default_rng(1).standard_normal((512, 64)).astype(np.float32)
coded = {"INT2 g64": qt.quantize_tensor(gauss, "int2", "rtn", 64), "E8P": formats.get("e8p").encode(gauss),
         "INT3 g64": qt.quantize_tensor(gauss, "int3", "rtn", 64), "E8P + E8 residual": formats.get("e8p_rvq3").encode(gauss)}
mse = {name: float(np.mean((q.dequantize() - gauss) ** 2)) for name, q in coded.items()}
for name, q in coded.items():
    print(f"{name:18s} {q.bits_per_weight:.3f} bits/weight   mean squared error {qt.notebook.fmt(mse[name], 2)}")
claim("E8P, at fewer bits, has under half INT2 g64's error", mse["E8P"] < 0.5 * mse["INT2 g64"])
claim("E8P + its residual stage, at fewer bits, beats INT3 g64", mse["E8P + E8 residual"] < mse["INT3 g64"])

# %% [markdown]
# ## 3. Incoherence: make every weight typical
#
# A lattice codebook fits a round, Gaussian cloud. Real weight matrices are not one: a few weights (and a few
# input channels) are far larger than the rest, and the codebook's one scale must stretch to them. QuIP# first
# rotates both sides of the weight, W̃ = R_outᵀ W R_in, with random orthogonal matrices (and the layer's inputs
# with them, so the layer computes the same). Each rotated weight is a mix of hundreds of originals, so by the
# central limit theorem it is close to Gaussian: its max / median of |w| falls to what n Gaussian numbers give,
# about √(2 ln n) / 0.674. QuIP# uses randomized Hadamard matrices (signs, then the fast Walsh-Hadamard
# transform, n log n work); SmolLM2's 576 and 1536 are not powers of two, so there `incoherent` uses a seeded
# random orthogonal matrix, QuIP's original choice. Here is SmolLM2's most outlier-heavy layer by this measure:

# %%
heavy = "model.layers.27.mlp.gate_proj"
W_heavy = qt.model.get_weight(qt.model.find_layer(smol, heavy))  # (1536, 576)
W_rotated, _ = incoherent(W_heavy, np.eye(W_heavy.shape[1]), seed=0)
figures.incoherence_histograms(W_heavy, W_rotated, title=f"{heavy}: |w| / median |w|")
plt.show()


# %%
def peak(x):
    return float(np.abs(x).max() / np.median(np.abs(x)))


gaussian_peak = np.sqrt(2 * np.log(W_heavy.size)) / 0.6745
i, j = np.unravel_index(np.abs(W_heavy).argmax(), W_heavy.shape)  # a power-of-two block around the largest weight
block = W_heavy[min(i // 512 * 512, 1024):][:512, min(j // 512 * 512, 64):][:, :512]
hadamard_block = rotation.rotate(np.ascontiguousarray(rotation.rotate(block, 0).T), 1).T
print(f"max / median: {peak(W_heavy):.1f} before, {peak(W_rotated):.1f} after; {gaussian_peak:.1f} for as many Gaussians")
print(f"the 512 x 512 block around the largest weight: {peak(block):.1f} before, "
      f"{peak(hadamard_block):.1f} after the randomized Hadamard (FWHT)")

# %% tags=["nbval-check-output"]
claim("the rotation lowers the layer's max / median more than 5x", peak(W_rotated) < peak(W_heavy) / 5)
claim("after it, the max / median is within 20 % of a Gaussian's", abs(peak(W_rotated) / gaussian_peak - 1) < 0.2)
claim("the randomized Hadamard does the same on that 512 x 512 block (more than 3x lower)",
      peak(hadamard_block) < peak(block) / 3)

# %% [markdown]
# The rotation costs little to store (two sign vectors, or a seed) and nothing in accuracy (it is undone exactly
# after rounding), and QuIP#'s rounding of W̃ is then LDLQ, GPTQ's feedback in the rotated basis, block by block
# of 8 columns with E8P as the "grid".
#
# ## 4. AQLM: codewords searched against the layer's output
#
# AQLM learns its tables for each layer: every group of 8 weights of a row is the **sum** of one codeword from
# each of M tables (2 tables of 256 entries in `aqlm_2x8`: 16 bits for 8 weights), times a scale per row. The
# codes are chosen for the layer's *output*, not for the weights: a group's loss, with the other groups held,
# is  −2 s b·u + s² uᵀ H_gg u  over candidate vectors u, where H = XᵀX is the input's second moment and b
# carries what the other groups' errors leave for this group to fix. Trying all 256 × 256 pairs for every group
# of a large model is too slow, so AQLM searches table by table and keeps a **beam** of the best partial
# choices. We quantize the layer of section 1 with AQLM, then take one group from the simple start AQLM's
# k-means gives (nearest codeword, then nearest codeword to what is left) and step the beam search by hand.

# %%
calib = qt.data.calibration(8, 256, source="wiki", tokenizer=smol_tok)
held_out = qt.data.calibration(8, 256, source="wiki", seed=1, tokenizer=smol_tok)
X_calib = qt.model.capture_inputs(smol, calib, [layer])[layer]
X_test = qt.model.capture_inputs(smol, held_out, [layer])[layer]
q_aqlm = qt.quantize_tensor(W, "aqlm_2x8", "aqlm", calib=X_calib)
tables, codes, s = q_aqlm.extra["codebooks"].astype(np.float64), q_aqlm.codes, q_aqlm.scales.astype(np.float64)
H = aqlm.layer_hessian(X_calib, W.shape[1], layer)
print(f"{tables.shape[0]} tables of {tables.shape[1]} codewords of {tables.shape[2]}; codes {codes.shape}; "
      f"{q_aqlm.bits_per_weight:.3f} bits/weight with the tables")

# %%
r, g = 0, 50  # row 0, group 50: weights 400..407 of the row
cols = slice(8 * g, 8 * g + 8)
V = aqlm.decode(tables, codes)
H_gg = H[cols, cols]
b = ((W - s * V) @ H)[r, cols] + s[r, 0] * (V[r, cols] @ H_gg)  # what the group sees of the other groups
loss = lambda u: -2 * s[r, 0] * (u @ b) + s[r, 0] ** 2 * np.einsum("kd,de,ke->k", u, H_gg, u)  # noqa: E731
first = nearest_rows(W[r:r + 1, cols] / s[r], tables[0])[0][0]  # the k-means start: nearest, then what is left
start = np.array([first, nearest_rows(W[r:r + 1, cols] / s[r] - tables[0][first], tables[1])[0][0]])
beam = 8
step1 = loss(tables[0] + tables[1][start[1]])  # table 1's 256 candidates, table 2's code held
kept = np.argsort(step1)[:beam]
step2 = loss((tables[0][kept][:, None, :] + tables[1][None, :, :]).reshape(-1, 8))  # 8 x 256 candidates
every = loss((tables[0][:, None, :] + tables[1][None, :, :]).reshape(-1, 8))  # all 65,536 pairs
figures.beam_steps([step1, step2], [kept, [int(np.argmin(step2))]], best=float(every.min()),
                   title=f"AQLM's beam search (beam {beam}) on one group of 8 weights of {layer}")
plt.show()

# %%
beam_codes, _ = aqlm.search_group(b[None], s[r:r + 1], H_gg, start[None], tables, beam)
greedy_codes, _ = aqlm.search_group(b[None], s[r:r + 1], H_gg, start[None], tables, 1)
losses = {name: float(loss(tables[0][c[0]][None] + tables[1][c[1]][None])[0]) for name, c in (
    ("k-means start", start), ("greedy (beam 1)", greedy_codes[0]), (f"beam {beam}", beam_codes[0]))}
losses["all 65,536 pairs"] = float(every.min())
for name, value in losses.items():
    print(f"{name:18s} group loss {value:.6g}")

# %% tags=["nbval-check-output"]
best = losses["all 65,536 pairs"]
claim("the stepped beam ends where aqlm.search_group does", abs(step2.min() - losses[f"beam {beam}"]) <= 1e-9 * abs(best))
claim("greedy search improves on the k-means start by more than a tenth of the best loss",
      losses["k-means start"] - losses["greedy (beam 1)"] > 0.1 * abs(best))
claim("greedy stops more than a tenth short of the best pair; the beam of 8 lands within 1 % of it",
      losses["greedy (beam 1)"] - best > 0.1 * abs(best) and losses[f"beam {beam}"] - best < 0.01 * abs(best))

# %% [markdown]
# AQLM alternates this search over every group (in random order, keeping E H exact after each), a least-squares
# update of the tables, and of the scales; every step lowers the layer's output loss. Its `extra["losses"]`
# records the loss relative to the layer's output energy after the k-means start and after every round:

# %%
print("relative output loss, k-means start then each round:", [f"{x:.4f}" for x in q_aqlm.extra["losses"]])

# %% [markdown]
# ## 5. Every method on one layer, live
#
# The same `q_proj` at about 2 bits per weight, each method given the same calibration inputs, each measured by
# the relative output error ‖W X − Ŵ X‖² / ‖W X‖² on **held-out** inputs (other wiki windows). Bits per weight are
# each tensor's own count: codes, scales, zero points, tables, sign vectors. (AffineQuant is not here: its work is
# a change to the model, the matrices between a norm and its readers, so it appears in the model's table below.)

# %%
two_bits = [("RTN INT2 g64", "rtn", "int2", 64), ("HQQ INT2 g64", "hqq", "int2", 64),
            ("GPTQ INT2 g64", "gptq", "int2", 64),
            ("QuIP# e8p", "quip_sharp", "e8p", "default"), ("VPTQ v8 2-bit", "vptq", "vptq_v8_2bit", "default")]
live = {}
for label, method, fmt, group_size in two_bits:
    live[label] = qt.quantize_tensor(W, fmt, method, group_size, calib=X_calib)
live["AQLM 2x8"] = q_aqlm
live_errors = {label: relative_output_error(W, q.dequantize(), X_test) for label, q in live.items()}
for label, q in live.items():
    print(f"{label:20s} {q.bits_per_weight:.3f} bits/weight   held-out output error {live_errors[label]:.4f}")

# %%
figures.bar_chart(list(live_errors), list(live_errors.values()), title=f"{layer} at ~2 bits: held-out output error",
                  ylabel="relative output error")
plt.show()

# %% tags=["nbval-check-output"]
vector_methods = ("QuIP# e8p", "AQLM 2x8", "VPTQ v8 2-bit")
claim("QuIP#, AQLM and VPTQ each have under 0.6x GPTQ's and a quarter of RTN's output error on this layer",
      all(live_errors[m] < min(0.6 * live_errors["GPTQ INT2 g64"], 0.25 * live_errors["RTN INT2 g64"])
          for m in vector_methods))
claim("without calibration, HQQ does not beat RTN at 2 bits here", live_errors["HQQ INT2 g64"] >= live_errors["RTN INT2 g64"])

# %% [markdown]
# ## 6. The model, from stored measurements
#
# QuIP# takes about 8 s for this one layer and AQLM 3 s; SmolLM2 has 210 linear layers, so the whole model takes
# them more than 20 minutes each on 2 cores. The table below was measured by `python benchmarks/below_3_bits.py`
# on a **slice** of the model: every linear of blocks 0, 10, 20 and 29 (28 layers), the other blocks left float,
# every method on the same slice, scored on the same 4096 test tokens (windows of 512) as the model card. It
# orders the methods on equal terms; it is not a whole-model figure (section 7 has the whole model).
# Each row records its command, machine and time.

# %% tags=["nbval-check-output"]
def print_study(study):
    """The stored rows as a table: bits per weight, perplexity, change from float, KL, top-token agreement."""
    base = study["float"]
    print(f"float: perplexity {base['ppl']:.2f} ± {base['ppl_stderr']:.2f} on {study['tokens']} tokens; quantized: "
          f"{len(study['layers'])} layers of blocks {study['blocks']}")
    print(f"{'row':22s} {'bits/w':>6s} {'perplexity':>20s} {'change':>24s} {'KL':>7s} {'top':>6s} {'quant. s':>8s}")
    for row in study["rows"]:
        print(f"{row['label']:22s} {row['bits_per_weight']:6.3f} {row['ppl']:10,.2f} ± {row['ppl_stderr']:<7,.2f} "
              f"{qt.notebook.percent(row['delta_pct']):>12s} ± {row['delta_pct_stderr']:<9,.1f} {row['kl']:7.4f} "
              f"{row['same_top_pct']:5.1f}% {row['quantize_seconds']:8.1f}")
    for label, reason in study["skipped"].items():
        print(f"not run: {label}: {reason}")
    machine = study["rows"][0]["machine"]
    print(f"measured on {machine['cpu']}, {machine['cores']} cores, {machine['threads']} thread(s)")


study = qt.zoo.below_3_bits("smollm2")
base = study["float"]
print_study(study)

# %%
figures.perplexity_points([{**row, "method": row["label"].split()[0]} for row in study["rows"]], base["ppl"],
                          base["ppl_stderr"], labels=True, title="SmolLM2-135M, blocks 0/10/20/29 quantized")
plt.show()

# %% [markdown]
# What the issue expected, checked on the stored figures. A model is called *usable* here when its perplexity is
# within twice float's. Two rows are scored on the same tokens, so a method *beats* another when its change from
# float is lower by more than twice the two changes' paired standard errors combined, √(se_a² + se_b²), and its
# KL is lower too. (The perplexities' own standard errors, ± 1.3 to 2 here, mostly measure which tokens are hard,
# the same for every row; comparing those alone would hide real differences.)

# %% tags=["nbval-check-output"]
rows = {row["label"]: row for row in study["rows"]}


def usable(label):
    return rows[label]["ppl"] < 2 * base["ppl"]


def beats(a, b, table=None):
    table = rows if table is None else table  # the slice's rows unless another table is given
    noise = 2 * np.hypot(table[a]["delta_pct_stderr"], table[b]["delta_pct_stderr"])
    return table[a]["delta_pct"] < table[b]["delta_pct"] - noise and table[a]["kl"] < table[b]["kl"]


def fewer_bits(a, b):
    return rows[a]["bits_per_weight"] <= rows[b]["bits_per_weight"]


claim("at ~2 bits QuIP#, AQLM and VPTQ each give a usable model", all(usable(m) for m in vector_methods))
claim("at ~2 bits RTN and GPTQ do not",
      not usable("RTN INT2 g64") and not usable("GPTQ INT2 g64"))
claim("at ~3 bits QuIP# (e8p_rvq3) and VPTQ (v4) each beat RTN INT3 g64, at fewer bits per weight",
      all(beats(m, "RTN INT3 g64") and fewer_bits(m, "RTN INT3 g64") for m in ("QuIP# e8p_rvq3", "VPTQ v4 3-bit")))
claim("VPTQ's lead over RTN INT3 is inside twice RTN's perplexity standard error: it shows token by token only",
      rows["RTN INT3 g64"]["ppl"] - rows["VPTQ v4 3-bit"]["ppl"] < 2 * rows["RTN INT3 g64"]["ppl_stderr"])
claim("any3 beats RTN INT3 g64 too, but spends more bits per weight (its tables and float16 scales)",
      beats("any3 g64", "RTN INT3 g64") and not fewer_bits("any3 g64", "RTN INT3 g64"))

# %% [markdown]
# Two expectations the stored figures do **not** support:
#
# * **"At ~3 bits AQLM beats RTN"**: there is no 3-bit AQLM row. AQLM's formats here are 2x8 and 1x16; a 3-bit
#   setting would need three 8-bit tables, or one larger table whose float16 entries would cost more than the
#   codes on layers this small. (1x16 is not run at all: on SmolLM2's layers its table holds every group in
#   float16, 18 bits per weight; see `study["skipped"]`.)
# * **"HQQ (no calibration) beats RTN at 3 and 4 bits"**: on this slice HQQ's change from float is lower than
#   RTN's at both, but by less than the noise, and it spends 0.2 more bits per weight (its float16 zero points);
#   only its KL is lower. At 2 bits it is worse than RTN. (On the whole model, section 7: at INT4 a real gain
#   over RTN, at INT3 a loss.)

# %% tags=["nbval-check-output"]
claim("HQQ's lead over RTN at 3 and at 4 bits is inside the paired noise here, at more bits per weight",
      not beats("HQQ INT3 g64", "RTN INT3 g64") and not beats("HQQ INT4 g64", "RTN INT4 g64")
      and not fewer_bits("HQQ INT3 g64", "RTN INT3 g64") and not fewer_bits("HQQ INT4 g64", "RTN INT4 g64"))
claim("its KL is below RTN's at 3 and at 4 bits", rows["HQQ INT3 g64"]["kl"] < rows["RTN INT3 g64"]["kl"]
      and rows["HQQ INT4 g64"]["kl"] < rows["RTN INT4 g64"]["kl"])
claim("at 2 bits HQQ is worse than RTN", rows["HQQ INT2 g64"]["ppl"] > rows["RTN INT2 g64"]["ppl"])
claim("no AQLM row at ~3 bits", not any(r["method"] == "aqlm" and r["band"] == "3" for r in study["rows"]))

# %% [markdown]
# **AffineQuant** (`qtutor/methods/affinequant.py`) learns an invertible matrix A for each norm → linears group
# and each v → o pair, so that Q(W Aᵀ) computes like W on the calibration inputs. The same INT2/INT3 g64 codes as
# RTN, so it is compared with RTN and GPTQ at those codes; but a full A after a norm cannot be folded into the
# norm's weight vector, so the deployed model keeps A⁻¹ (576 × 576 float16 numbers per norm) and multiplies by
# it: counted honestly, that is 3 more bits per weight here, as much as the 3-bit codes themselves. On a model
# 576 wide the matrix is not free; on a 4096-wide one it is a smaller share, never zero. `ln_matrix=False` keeps
# A diagonal at the norms, folded into their weights for free, and full only on v → o: the row "norms diagonal".

# %% tags=["nbval-check-output"]
claim("AffineQuant beats RTN on the same INT2 and INT3 g64 codes",
      beats("AffineQuant INT2 g64", "RTN INT2 g64") and beats("AffineQuant INT3 g64", "RTN INT3 g64"))
claim("but not GPTQ, and at 2 bits it is not usable",
      not beats("AffineQuant INT3 g64", "GPTQ INT3 g64") and not beats("AffineQuant INT2 g64", "GPTQ INT2 g64")
      and not usable("AffineQuant INT2 g64"))
claim("its run-time matrices cost more than 2.5 extra bits per weight on these layers",
      rows["AffineQuant INT3 g64"]["bits_per_weight"] - rows["RTN INT3 g64"]["bits_per_weight"] > 2.5)
diagonal = "AffineQuant INT3 g64 (norms diagonal)"
claim("and buy nothing here: diagonal at the norms, nothing stored, it lands within the noise of the full matrices",
      not beats("AffineQuant INT3 g64", diagonal) and not beats(diagonal, "AffineQuant INT3 g64"))
claim("that free version beats RTN INT3 g64 at the same bits per weight",
      beats(diagonal, "RTN INT3 g64") and fewer_bits(diagonal, "RTN INT3 g64"))

# %% [markdown]
# Read across the bands: QuIP# at 2.00 bits per weight lands near RTN at 3.30, and QuIP#'s 3-bit version (+9 %)
# near RTN at 4.31 (+6 %). Bought with time: QuIP# took about 5 minutes for 28 layers, AQLM 1.5, VPTQ and GPTQ under
# one, RTN a tenth of a second. These are 28 of 210 layers, so every change is smaller than on the whole model;
# the model card (notebook 15) has RTN on all 210, where INT3 g64 already loses +212 % and INT2 g64 leaves
# nothing (perplexity in the hundreds of thousands). What carries over is the order, not the size.

# %% tags=["nbval-check-output"]
card = {row["label"]: row for row in qt.zoo.measurements("smollm2")["rtn"]}
claim("on the whole model (the card), RTN INT3 g64 loses several times what it loses on the slice",
      card["INT3 g64"]["delta_pct"] > 3 * rows["RTN INT3 g64"]["delta_pct"])

# %% [markdown]
# ## 7. The whole model
#
# The same script with `--blocks all` quantizes all 210 linear layers (lm_head stays float, as everywhere in the
# course), on the same test tokens: `qt.zoo.below_3_bits("smollm2", whole_model=True)`. It ran the 2-bit rows and
# the 3- and 4-bit rows that take minutes, not hours (AffineQuant's training, about an hour per row on the whole
# model, stays on the slice); the command, machine and seconds are in each row.

# %% tags=["nbval-check-output"]
whole = qt.zoo.below_3_bits("smollm2", whole_model=True)
print_study(whole)
whole_rows = {row["label"]: row for row in whole["rows"]}
assert abs(whole["float"]["ppl"] - base["ppl"]) < 1e-6 * base["ppl"]  # the same float model and tokens
print(f"{sum(row['seconds'] for row in whole['rows']) / 60:.0f} minutes for these rows, scoring included")

# %% [markdown]
# On all 210 layers the order the slice showed holds, and every loss grows. Scalar rounding at 2 bits leaves no
# model: RTN INT2 g64 ends with a perplexity in the hundreds of thousands and GPTQ in the tens of thousands (a KL
# near 10 and 8 nats: the next-token guesses are noise). The vector methods are a different world — QuIP# near 93
# at 2.00 bits per weight, AQLM and VPTQ near 210 — hundreds of times better, and still not a usable model: 3.6 to
# 8.2 times float's perplexity. The papers' 2-bit models are usable because they are large (the issue's anchor:
# QuIP# takes Llama-2-70B to 4.16 at 2 bits, where OPTQ gives 109.8); a 135M-parameter model has little
# redundancy, and every weight carries more of what it computes.
#
# At ~3 bits the whole model separates what the slice could not. GPTQ halves RTN's loss; any3 (a learned table of
# 8 levels per row) goes further at 0.4 more bits per weight; QuIP#'s two-stage lattice code is the best row at
# the fewest bits. VPTQ's 3-bit code sits level with RTN, inside the noise. And HQQ, with no data, splits as its
# docstring records: at INT4 a real gain over RTN, at INT3 a loss of several times RTN's.

# %% tags=["nbval-check-output"]
def beats_whole(a, b):
    return beats(a, b, table=whole_rows)


claim("on the whole model, QuIP#, AQLM and VPTQ each beat GPTQ INT2 g64, and GPTQ beats RTN INT2 g64",
      all(beats_whole(m, "GPTQ INT2 g64") for m in vector_methods) and beats_whole("GPTQ INT2 g64", "RTN INT2 g64"))
claim("each of the three ends over 100 times below GPTQ's perplexity, at fewer bits per weight",
      all(100 * whole_rows[m]["ppl"] < whole_rows["GPTQ INT2 g64"]["ppl"]
          and whole_rows[m]["bits_per_weight"] < whole_rows["GPTQ INT2 g64"]["bits_per_weight"]
          for m in vector_methods))
claim("yet none is usable: each stays above twice float's perplexity",
      all(whole_rows[m]["ppl"] > 2 * base["ppl"] for m in vector_methods))
claim("and every row loses more on 210 layers than on the slice's 28",
      all(whole_rows[label]["delta_pct"] > rows[label]["delta_pct"] for label in whole_rows))

# %% tags=["nbval-check-output"]
claim("at ~3 bits QuIP# (e8p_rvq3) beats RTN INT3 g64 and GPTQ INT3 g64 at fewer bits per weight, and ends "
      "below every other 3-bit row",
      beats_whole("QuIP# e8p_rvq3", "RTN INT3 g64") and beats_whole("QuIP# e8p_rvq3", "GPTQ INT3 g64")
      and whole_rows["QuIP# e8p_rvq3"]["bits_per_weight"] < whole_rows["RTN INT3 g64"]["bits_per_weight"]
      and all(whole_rows["QuIP# e8p_rvq3"]["ppl"] < row["ppl"] for row in whole["rows"]
              if row["band"] == "3" and row["label"] != "QuIP# e8p_rvq3"))
claim("GPTQ beats RTN at INT3 g64, and any3 beats GPTQ, at more bits per weight",
      beats_whole("GPTQ INT3 g64", "RTN INT3 g64") and beats_whole("any3 g64", "GPTQ INT3 g64")
      and whole_rows["any3 g64"]["bits_per_weight"] > whole_rows["GPTQ INT3 g64"]["bits_per_weight"])
claim("VPTQ v4 does not beat RTN INT3 g64 on the whole model: its lead is inside the paired noise",
      not beats_whole("VPTQ v4 3-bit", "RTN INT3 g64"))
claim("HQQ, with no data, beats RTN at INT4 g64, and at INT3 g64 ends above twice RTN's perplexity",
      beats_whole("HQQ INT4 g64", "RTN INT4 g64")
      and whole_rows["HQQ INT3 g64"]["ppl"] > 2 * whole_rows["RTN INT3 g64"]["ppl"])

# %% [markdown]
# ## Exercises
#
# 1. The grid picture: at how many bits does the group of section 1 reach an rms error under 10 % of its own
#    rms? Loop over 2 to 8 bits.
# 2. A square grid in 8 dimensions at 2 bits is the 4⁸ = 65,536 corners of the best 4-level grid on each axis,
#    as many points as E8P. Quantize the Gaussian `gauss` with it (each coordinate to the nearest of `levels_1d`,
#    after the same scale as E8P's, rms / 1.03, or simply in units of the data's rms) and compare its error with
#    E8P's: same count of points, placed differently.
# 3. Incoherence on another layer: the max / median of section 3's layer 10 `q_proj` (`W`) before and after.
# 4. Beam width: rerun `aqlm.search_group` on the group of section 4 with beams 1, 2, 4, 16 and 64.
# 5. QuIP# without its rotation: `qt.quantize_tensor(W, "e8p", "quip_sharp", calib=X_calib, incoherence=False)`.
#    How much of its advantage over GPTQ on the layer does the rotation carry?

# %% tags=["solution"]
# 1. bits until the rms error is under 10 % of the group's rms
for bits in range(2, 9):
    values = qt.quantize_tensor(group, f"int{bits}", "rtn", 64).dequantize()
    ratio = np.sqrt(np.mean((values - group) ** 2)) / rms
    print(f"INT{bits}: {ratio:.1%}")
    if ratio < 0.1:
        break

# %% tags=["solution", "nbval-check-output"]
# 2. the 4^8 cube against E8P, the same number of points (in units of the data's rms: the Gaussian's own)
cube = levels_1d[np.abs(gauss[..., None] - levels_1d).argmin(axis=-1)]
cube_mse = float(np.mean((cube - gauss) ** 2))
print(f"cube of 4^8 points: {qt.notebook.fmt(cube_mse, 2)}, E8P: {qt.notebook.fmt(mse['E8P'], 2)}")
claim("E8P's 65,536 points beat the cube's 65,536 by more than 15 %", mse["E8P"] < 0.85 * cube_mse)

# %% tags=["solution"]
# 3. layer 10 q_proj
W_q_rotated, _ = incoherent(W, np.eye(W.shape[1]), seed=0)
print(f"{layer}: max / median {peak(W):.1f} before, {peak(W_q_rotated):.1f} after, "
      f"{np.sqrt(2 * np.log(W.size)) / 0.6745:.1f} for as many Gaussians")

# %% tags=["solution"]
# 4. beam width
for width in (1, 2, 4, 16, 64):
    found, _ = aqlm.search_group(b[None], s[r:r + 1], H_gg, start[None], tables, width)
    print(f"beam {width:2d}: loss {loss(tables[0][found[0, 0]][None] + tables[1][found[0, 1]][None])[0]:.6g}")
print(f"all pairs: {every.min():.6g}")

# %% tags=["solution"]
# 5. QuIP# without the rotation
plain = qt.quantize_tensor(W, "e8p", "quip_sharp", calib=X_calib, incoherence=False)
print(f"QuIP# without incoherence {relative_output_error(W, plain.dequantize(), X_test):.4f}, with "
      f"{live_errors['QuIP# e8p']:.4f}, GPTQ INT2 g64 {live_errors['GPTQ INT2 g64']:.4f}")

# %% [markdown]
# ## What you learned
#
# * At 2 bits a scalar grid adds noise comparable to the weights themselves; rounding **vectors** of 8 weights onto
#   points that cover a round cloud (E8P's lattice ball, AQLM's and VPTQ's learned tables) gets closer at the same
#   bits, and the tables' storage counts in the bits per weight.
# * **Incoherence**, a random rotation of both sides of W, turns an outlier-heavy matrix into a Gaussian-looking
#   one (max / median down to √(2 ln n) / 0.674), which is what a lattice codebook fits.
# * AQLM chooses codes for the layer's **output** (the H-weighted loss), table by table with a beam; on SmolLM2
#   the vector methods keep a 2-bit slice usable where RTN and GPTQ do not.
#
# Next: [13 · KV-cache quantization](13_kv_cache.ipynb).
