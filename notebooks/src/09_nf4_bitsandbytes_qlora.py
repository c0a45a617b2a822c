# %% [markdown]
# # 09 · NF4, bitsandbytes and QLoRA
#
# Every notebook so far did **post-training quantization** (PTQ): take trained weights, round them, measure what
# was lost. This one is about the 4-bit format most people meet first, and the reason they meet it: **QLoRA**
# (Dettmers, Pagnoni, Holtzman and Zettlemoyer 2023, arXiv:2305.14314) stores a model's weights in **NF4** with
# **double quantization**, freezes them, and *fine-tunes* the model through small float adapters beside them —
# a 65B model on one 48 GB GPU. The library that does it in practice is **bitsandbytes**, reached through
# transformers' `BitsAndBytesConfig` and PEFT's `LoraConfig`.
#
# Here: why NF4's 16 levels sit where they do; what double quantization stores, byte by byte; bitsandbytes' API
# beside qtutor's on the same layer (the same bytes); and QLoRA on SmolLM2-135M, fine-tuned on the course's
# news text and scored on news it never saw. (Training the *quantized* weights themselves, quantization-aware
# training, is notebook 17.)

# %%
import logging
from statistics import NormalDist

import numpy as np
import matplotlib.pyplot as plt
import torch
import qtutor as qt
from qtutor.formats.normalfloat import DOUBLE_QUANT_BLOCK, NF4_TABLE, dynamic_map
from qtutor.training import qlora
from qtutor.training.loop import train

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
smol, smol_tok = qt.load_model("smollm2")
tiny, _ = qt.load_model("tiny")
nf4 = qt.formats.get("nf4")

# %% [markdown]
# ## Why the levels are quantiles of a normal
#
# A block of 64 weights is divided by its largest magnitude, its **absmax**, so every value lands in $[-1, 1]$.
# INT4 then spreads its levels evenly over that range. But trained weights are roughly normal: most sit near 0,
# few near the ends, so the outer INT4 levels are almost never used while the crowded middle gets coarse steps.
#
# **Quantile quantization** puts the levels where each gets the same share of the weights: level $i$ at the
# quantile $\Phi^{-1}(p_i)$ of the normal distribution. Sixteen equally used codes carry the full 4 bits of
# information per weight; unequally used codes carry less (their entropy $-\sum_c f_c \log_2 f_c$). QLoRA's NF4
# makes two changes to plain quantiles: the code holds an exact **zero** (padding and exactly-zero weights stay
# zero), and the ends are exactly $\pm 1$ (the absmax weight itself is stored without error). So it takes 8
# positive and 7 negative quantiles from the probabilities between $\delta$ and $\tfrac12$, adds 0 and divides by
# the largest:
#
# $$q^+_i = \Phi^{-1}\!\Big(\delta + \tfrac{i}{8}(\tfrac12 - \delta)\Big),\ i = 0..7, \qquad
#   q^-_i = -\Phi^{-1}\!\Big(\delta + \tfrac{i}{7}(\tfrac12 - \delta)\Big),\ i = 0..6, \qquad
#   \delta = \tfrac12\Big(1 - \tfrac{1}{2 \cdot 15} + 1 - \tfrac{1}{2 \cdot 16}\Big) = 0.96771$$
#
# ($\delta$ stops short of 1, where $\Phi^{-1}$ is infinite: it averages the outermost quantile of a 15- and a
# 16-level code.) bitsandbytes ships the result as 16 float32 literals; qtutor uses the same literals.

# %% tags=["nbval-check-output"]
offset = 0.5 * (1 - 1 / (2 * 15) + 1 - 1 / (2 * 16))
quantile = NormalDist().inv_cdf
positive = [quantile(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
negative = [-quantile(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
levels = np.sort(np.array(positive + negative + [0.0]))
levels /= levels.max()
print("derived   ", " ".join(f"{v:+.4f}" for v in levels))
print("NF4 table ", " ".join(f"{v:+.4f}" for v in NF4_TABLE))
claim("the derivation gives bitsandbytes' table to 6 decimals (its literals were made in float32)",
      np.abs(levels - NF4_TABLE).max() < 1e-6)

# %% [markdown]
# Now a real block-normalized weight matrix. SmolLM2's file ships its weights already rounded (Q4_1, notebook 4),
# so their histogram has spikes; the tiny model's weights were trained in float. Its first `gate_proj`, divided
# block by block by the absmax of each 64 weights, against NF4's levels and INT4's symmetric absmax levels
# $k/7$ (the same block, the same scale, only the levels differ):

# %%
W_tiny = tiny.model.layers[0].mlp.gate_proj.weight.detach().numpy()
blocks = W_tiny.reshape(-1, 64)
normalized = (blocks / np.abs(blocks).max(axis=1, keepdims=True)).ravel()
int4_levels = np.arange(-7, 8) / 7


def usage(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Fraction of the values whose nearest level is each level of ``grid``."""
    nearest = np.abs(values[:, None] - grid[None, :]).argmin(axis=1)
    return np.bincount(nearest, minlength=len(grid)) / len(values)


def entropy_bits(fractions: np.ndarray) -> float:
    used = fractions[fractions > 0]
    return float(-(used * np.log2(used)).sum())


use_nf4, use_int4 = usage(normalized, NF4_TABLE), usage(normalized, int4_levels)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
axes[0].hist(normalized, bins=200, color="0.6")
for value in NF4_TABLE:
    axes[0].axvline(value, color="C0", linewidth=0.8)
for value in int4_levels:
    axes[0].axvline(value, color="C3", linewidth=0.8, linestyle=":")
axes[0].set_xlabel("weight / absmax of its block of 64")
axes[0].set_title("tiny model, layer 0 gate_proj: NF4 levels (blue), INT4 (red)")
axes[1].bar(np.arange(16) - 0.2, use_nf4, width=0.4, color="C0", label=f"NF4 ({entropy_bits(use_nf4):.2f} bits)")
axes[1].bar(np.arange(15) + 0.2, use_int4, width=0.4, color="C3", label=f"INT4 ({entropy_bits(use_int4):.2f} bits)")
axes[1].set_xlabel("code (lowest level first)")
axes[1].set_ylabel("share of the weights")
axes[1].set_title("how often each code is used (entropy in the legend)")
axes[1].legend(fontsize=8)
plt.show()

# %% tags=["nbval-check-output"]
errors = {}
for name in ("nf4", "int4"):
    q = qt.formats.get(name).encode(W_tiny, group_size=64, **({} if name == "nf4" else {"sym": True}))
    errors[name] = np.linalg.norm(q.dequantize() - W_tiny) / np.linalg.norm(W_tiny)
print(f"code entropy: NF4 {qt.notebook.fmt(entropy_bits(use_nf4))} bits, INT4 {qt.notebook.fmt(entropy_bits(use_int4))} bits")
print(f"relative weight error, blocks of 64: NF4 {qt.notebook.fmt(errors['nf4'])}, INT4 {qt.notebook.fmt(errors['int4'])}")
claim("NF4 uses its codes more evenly than INT4 (more bits of entropy) and rounds these weights with a lower error",
      entropy_bits(use_nf4) > entropy_bits(use_int4) and errors["nf4"] < errors["int4"])

# %% [markdown]
# NF4 spends its levels where the weights are: its 16 codes are used far more evenly than INT4's 15, and the
# error is lower at the same 4 bits and the same block scale. Notebook 1 made the same comparison on synthetic
# normal weights; notebook 15 puts NF4 among every method on SmolLM2 (+27 % perplexity there, in groups of 64:
# 4 bits is costly for a 135M model, whatever the levels).
#
# ## Double quantization, byte by byte
#
# One float32 absmax per 64 weights costs $32/64 = 0.5$ bit per weight: 4.5 bits in all. QLoRA's **double
# quantization** quantizes those absmax values too: subtract their mean, then store each in **8 bits** with
# bitsandbytes' *dynamic* code (256 values spread over magnitudes from $10^{-6}$ to 1, finer near 0), with one
# float32 scale per 256 of them:
#
# $$\text{absmax}_b = \text{DYN}[c_b] \cdot s_{\lfloor b/256 \rfloor} + \overline{\text{absmax}}, \qquad
#   \text{bits per weight} = 4 + \frac{8}{64} + \frac{32}{64 \cdot 256} = 4.127$$
#
# The layout is bitsandbytes': the codes of two consecutive weights (row-major) in one byte, the **first in the
# high nibble**. On SmolLM2's first `q_proj`:

# %% tags=["nbval-check-output"]
q_proj = smol.model.layers[0].self_attn.q_proj
W = q_proj.weight.detach().numpy()
plain = nf4.encode(W, group_size=64)
double = nf4.encode(W, group_size=64, double_quant=True)
state = double.extra["double_quant"]
packed = nf4.pack(double)
n_blocks = W.size // 64
print(f"{W.shape[0]} x {W.shape[1]} weights = {W.size:,}: {packed.nbytes:,} bytes of codes, {n_blocks:,} blocks of 64")
print(f"absmax, plain: {n_blocks:,} float32 = {4 * n_blocks:,} bytes -> {plain.bits_per_weight:.4f} bits/weight")
print(f"absmax, double quantized: {state['codes'].size:,} uint8 codes + {state['absmax2'].size} float32 scales "
      f"(one per {DOUBLE_QUANT_BLOCK}) + 1 float32 mean = {state['codes'].size + 4 * state['absmax2'].size + 4:,} "
      f"bytes -> {double.bits_per_weight:.4f} bits/weight")
print("\nthe first 4 bytes of codes:", " ".join(f"{b:02x}" for b in np.asarray(packed).ravel()[:4]))
first = np.asarray(packed).ravel()[0]
print(f"byte 0x{first:02x}: weight 0 has code {first >> 4} (NF4 {NF4_TABLE[first >> 4]:+.4f}), "
      f"weight 1 code {first & 15} (NF4 {NF4_TABLE[first & 15]:+.4f})")
absmax_0 = np.abs(W.ravel()[:64]).max()
stored_0 = dynamic_map()[state["codes"].ravel()[0]] * state["absmax2"].ravel()[0] + state["offset"]
print(f"block 0: absmax {absmax_0:.6f}; stored as code {state['codes'].ravel()[0]} -> {stored_0:.6f}")
print(f"weight 0: {W.ravel()[0]:+.6f} -> {NF4_TABLE[first >> 4]:+.4f} x {stored_0:.6f} = "
      f"{double.dequantize().ravel()[0]:+.6f}")

# %% [markdown]
# Double quantization saves 0.37 bit per weight — 3 GB on a 65B model. The 8-bit absmax moves a block's scale by up
# to about one percent (0.7 % in block 0): small next to the 4-bit rounding of the weights themselves.
#
# ## bitsandbytes beside qtutor
#
# What people type (on a CUDA GPU; bitsandbytes' CPU backend, used here, exists since 0.47):
#
# ```python
# from transformers import AutoModelForCausalLM, BitsAndBytesConfig
# from peft import LoraConfig, get_peft_model
#
# config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
#                             bnb_4bit_compute_dtype=torch.bfloat16)
# model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", quantization_config=config)
# model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, bias="none",
#                                          target_modules="all-linear", task_type="CAUSAL_LM"))
# ```
#
# Underneath, every linear becomes a `bitsandbytes.nn.Linear4bit` whose weight is the packed bytes with a
# `QuantState` (absmax codes, their scales, the mean), and `bitsandbytes.functional.quantize_4bit` is the
# function that makes them. Called directly on the same layer (the import may log that an optional CPU kernel
# could not be fetched: it falls back to its own code, nothing is downloaded):

# %%
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnb_functional  # noqa: E402

W_torch = q_proj.weight.detach().clone()
their_packed, their_state = bnb_functional.quantize_4bit(W_torch, blocksize=64, quant_type="nf4",
                                                         compress_statistics=True)
ours = qlora.QLoRALinear(q_proj, rank=8, compute_dtype=torch.float32)  # qtutor's frozen NF4 base + adapters
their_layer = bnb.nn.Linear4bit(W.shape[1], W.shape[0], bias=False, compute_dtype=torch.float32,
                                compress_statistics=True, quant_type="nf4")
their_layer.weight = bnb.nn.Params4bit(W_torch, requires_grad=False, quant_type="nf4", compress_statistics=True,
                                       blocksize=64)
their_layer = their_layer.to("cpu")  # a Params4bit is quantized when it is moved to its device
x = torch.randn(8, W.shape[1], generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    ours_y, their_y = ours(x), their_layer(x)
output_gap = float((ours_y - their_y).abs().max() / their_y.abs().max())

# %% tags=["nbval-check-output"]
print(f"bitsandbytes {bnb.__version__}: packed {tuple(their_packed.shape)} {their_packed.dtype}, "
      f"absmax codes {tuple(their_state.absmax.shape)} {their_state.absmax.dtype}, "
      f"{their_state.state2.absmax.numel()} float32 scales, blocksize {their_state.blocksize}")
claim("bitsandbytes' packed 4-bit codes equal qtutor's, byte for byte",
      np.array_equal(their_packed.numpy().ravel(), ours.weight_packed.numpy().ravel()))
their_codes, our_codes = their_state.absmax.numpy(), ours.absmax_codes.numpy()
differ = their_codes != our_codes
centred = (np.abs(W).reshape(-1, 64).max(axis=1) - state["offset"]) / np.repeat(state["absmax2"], DOUBLE_QUANT_BLOCK)[:n_blocks]
ours_nearer = np.abs(centred - dynamic_map()[our_codes]) < np.abs(centred - dynamic_map()[their_codes])
same_blocks = np.repeat(~differ, 64)
their_W = bnb_functional.dequantize_4bit(their_packed, their_state).numpy().ravel()
weight_gap = np.abs(their_W - ours.base_weight().numpy().ravel())[same_blocks].max() / np.abs(their_W).max()
print(f"8-bit absmax codes that differ: {differ.sum()} of {n_blocks:,} blocks, each by "
      f"{sorted(set(np.abs(their_codes[differ].astype(int) - our_codes[differ]).tolist()))} code")
claim("the 8-bit absmax codes agree but in under 1 % of the blocks, and where they differ qtutor's is the nearer "
      "code of the dynamic map (bitsandbytes' CPU search misses the nearest by a hair)",
      differ.mean() < 0.01 and ours_nearer[differ].all())
claim("in every other block the dequantized weights agree to a part in 10^6, and the layer's outputs (Linear4bit "
      "against QLoRALinear at step 0) agree within 1 % of their largest value",
      weight_gap < 1e-6 and output_gap < 0.01)

# %% [markdown]
# ## QLoRA: train beside the frozen 4-bit weights
#
# LoRA (Hu et al. 2021, arXiv:2106.09685) freezes a weight $W$ and learns a low-rank update beside it; QLoRA
# keeps the frozen weight in NF4 and dequantizes it on the fly, in the compute dtype:
#
# $$y = x\, \hat W^\top + \frac{\alpha}{r}\, x A^\top B^\top, \qquad A \in \mathbb{R}^{r \times d_{in}},\
#   B \in \mathbb{R}^{d_{out} \times r}, \qquad \hat W = \text{dequant}_{\text{NF4}}(W)$$
#
# $A$ starts random (Kaiming-uniform, PEFT's default) and $B$ at **zero**, so at step 0 the model *is* the NF4
# base. Only $A$ and $B$ train; the gradient still flows *through* $\hat W$ to the earlier layers' adapters,
# $\partial L / \partial x = (\partial L / \partial y)\, \hat W$, with $\hat W$ rebuilt from the bytes for the
# backward pass rather than kept.
#
# Why it fits on one GPU: full fine-tuning in bfloat16 with AdamW keeps a weight (16 bits), its gradient (16) and
# two float32 moments (64) — 96 bits for *every* weight. QLoRA keeps 4.127 bits per base weight, and the 96-odd
# bits only for the adapters' few numbers. On SmolLM2, adapters of rank 16 (the stored run below) on every
# linear but the output head:

# %% tags=["nbval-check-output"]
student, _ = qt.load_model("smollm2")
report = qlora.prepare(student, rank=16, alpha=16, compute_dtype=torch.float32)
weights = report.base_weights
print(f"{len(report.layers)} linears adapted, {weights:,} base weights at {report.base_bits_per_weight:.4f} bits/weight")
print(f"trainable: {report.trainable_parameters:,} adapter numbers = {report.adapter_share:.2%} of the model")
full_bits = 96 * (report.trainable_parameters + report.frozen_parameters)
qlora_bits = (report.base_bits_per_weight * weights + 32 * (report.frozen_parameters - weights)
              + (32 + 32 + 64) * report.trainable_parameters)
print(f"training state: full fine-tuning {full_bits / 8e6:.0f} MB, QLoRA {qlora_bits / 8e6:.0f} MB "
      f"(the other frozen parameters -- embeddings, norms -- kept in float32)")
adapters_start_at_zero = all(float(student.get_submodule(name).lora_B.detach().abs().max()) == 0 for name in report.layers)
claim("every B starts at zero, so step 0 is exactly the NF4 base", adapters_start_at_zero)

# %% [markdown]
# A few live steps on news (the last 4096 news tokens are held out: they are never trained on), one window of
# 128 tokens a step at QLoRA's learning rate $2 \cdot 10^{-4}$:

# %%
news = qt.data.tokens("news", smol_tok)
held_out, training_text = news[-4096:], news[:-4096]
live = train(student, training_text, steps=3, lr=2e-4, batch=1, seq_len=128, progress=True)
print("loss per step:", " ".join(f"{loss:.3f}" for loss in live.losses))
moved = max(float(student.get_submodule(name).lora_B.detach().abs().max()) for name in report.layers)
print(f"largest |B| after {len(live.losses)} steps: {moved:.2e}")

# %% [markdown]
# Three steps move nothing you could measure. The stored run (`python tools/training_smollm2.py --part qlora`)
# trained 20 steps of 4 windows of 256 news tokens, once on the NF4 base (QLoRA) and once on the float base
# (plain LoRA, the same adapters from the same seed), and scored the held-out news at steps 0, 5 and 20:

# %%
stored = qt.zoo.training("smollm2")["qlora"]
float_news = stored["float_news"]
print(f"{stored['command']}: {stored['seconds']} s on {stored['machine']}")
print(f"rank {stored['rank']}, alpha {stored['alpha']}, lr {stored['lr']}, {stored['batch']} x {stored['seq_len']} "
      f"tokens a step, compute in {stored['compute_dtype']}, {stored['held_out_tokens']} held-out news tokens")
print(f"\nfloat base, no adapters: perplexity {float_news['ppl']:.2f} ± {float_news['ppl_stderr']:.2f}")
print(f"{'base':6s} {'step':>4s} {'perplexity':>16s} {'vs float base':>18s} {'vs its step 0':>18s}")
for base in ("nf4", "float"):
    for row in stored[base]["checkpoints"]:
        print(f"{base:6s} {row['step']:4d} {row['ppl']:9.2f} ± {row['ppl_stderr']:4.2f} "
              f"{qt.notebook.percent(row['delta_pct']):>9s} ± {row['delta_pct_stderr']:4.1f} "
              f"{qt.notebook.percent(row['from_step0_pct']):>9s} ± {row['from_step0_pct_stderr']:4.1f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
for base, color, label in (("nf4", "C0", "QLoRA: NF4 base + adapters"), ("float", "C2", "LoRA: float base + adapters")):
    run = stored[base]
    axes[0].plot(np.arange(1, len(run["losses"]) + 1), run["losses"], color=color, label=label)
    steps = [row["step"] for row in run["checkpoints"]]
    axes[1].errorbar(steps, [row["ppl"] for row in run["checkpoints"]],
                     yerr=[row["ppl_stderr"] for row in run["checkpoints"]], color=color, marker="o", capsize=3,
                     label=label)
axes[1].axhline(float_news["ppl"], color="0.4", linestyle="--", label="float base, no training")
axes[0].set_xlabel("step")
axes[0].set_ylabel("training loss (nats per token)")
axes[0].set_title("loss on the news windows of each step")
axes[1].set_xlabel("step")
axes[1].set_ylabel("perplexity on held-out news")
axes[1].set_title("held-out news (± standard error of each perplexity)")
for ax in axes:
    ax.legend(fontsize=8)
plt.show()

# %% tags=["nbval-check-output"]
nf4_rows, float_rows = stored["nf4"]["checkpoints"], stored["float"]["checkpoints"]
nf4_end, float_end = nf4_rows[-1], float_rows[-1]
claim("QLoRA lowers held-out news perplexity below the NF4 base's, by more than twice the paired standard error",
      nf4_end["from_step0_pct"] < -2 * nf4_end["from_step0_pct_stderr"])
claim("QLoRA wins back over half of what the NF4 base cost on news (its change from the float base is less than "
      "half the NF4 base's)", nf4_end["delta_pct"] < 0.5 * nf4_rows[0]["delta_pct"])
claim("LoRA on the float base ends lower still, but gains less from the same steps than QLoRA does from its NF4 "
      "start (the adapters also learn to repair the rounding)",
      float_end["ppl"] < nf4_end["ppl"]
      and float_end["from_step0_pct"] - nf4_end["from_step0_pct"]
      > 2 * np.hypot(float_end["from_step0_pct_stderr"], nf4_end["from_step0_pct_stderr"]))

# %% [markdown]
# What the run shows. NF4 costs SmolLM2 about a quarter of its news perplexity (+26 %; a small model is sensitive
# to 4 bits). Twenty QLoRA steps — 20,480 news tokens, about two minutes on two cores — cut the NF4 base's
# held-out news perplexity by 13 %, more than half of that cost: the adapters learn the news text *and* part of
# what the rounding took. LoRA on the float base gains less from the same steps (−7 %), having nothing to repair,
# and ends lowest. That is the trade QLoRA offers: a 4-bit base you can fine-tune in a small fraction of the
# memory, ending near — not at — what the float base would reach. Each perplexity carries its standard error; the
# changes carry the paired one (the same tokens, before and after), which is much smaller.
#
# ## Exercises
#
# 1. INT4 with an asymmetric absmax grid (16 levels from the block's minimum to its maximum) also uses all 16
#    codes. Compute its code entropy and weight error on `W_tiny`: where does it land beside NF4 and symmetric INT4?
# 2. A 7B Llama has 6.5·10⁹ weights in its linears. How many GB does its frozen base take in NF4 with double
#    quantization, and how many would full fine-tuning's training state (96 bits a weight) take?
# 3. Why is $B$ started at zero rather than $A$? Take one `QLoRALinear`, run a backward pass at step 0, and look
#    at which adapter gets a gradient.

# %% tags=["solution", "nbval-check-output"]
# 1. asymmetric INT4: 16 levels over [min, max] of each block
q = qt.formats.get("int4").encode(W_tiny, group_size=64, sym=False)
codes = np.asarray(q.codes).ravel()
asym_use = np.bincount(codes, minlength=16) / codes.size
asym_error = np.linalg.norm(q.dequantize() - W_tiny) / np.linalg.norm(W_tiny)
print(f"asymmetric INT4: entropy {qt.notebook.fmt(entropy_bits(asym_use))} bits, error {qt.notebook.fmt(asym_error)}")
claim("asymmetric INT4 comes within 5 % of NF4's error (on either side), much nearer than symmetric INT4",
      abs(asym_error / errors["nf4"] - 1) < 0.05 and errors["int4"] > 1.1 * errors["nf4"])
# Its grid follows each block's own [min, max]: a block is rarely symmetric, so a shifted grid wastes fewer levels.
# It pays with a zero point per block (4 + 16/64 + 4/64 = 4.31 bits against NF4's 4.127 with double quantization).

# %% tags=["solution", "nbval-check-output"]
# 2. the 7B model's memory
n = 6.5e9
print(f"NF4 + double quant base: {n * 4.127 / 8 / 1e9:.1f} GB; full fine-tuning state: {n * 96 / 8 / 1e9:.0f} GB")

# %% tags=["solution", "nbval-check-output"]
# 3. with B = 0 the output does not depend on A, so A's gradient is exactly zero at step 0; B's is not
layer = qlora.QLoRALinear(tiny.model.layers[0].mlp.up_proj, rank=4, compute_dtype=torch.float32)
layer(torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(0))).square().sum().backward()
print("A's gradient is all zero:", bool((layer.lora_A.grad == 0).all()))
print("B's gradient is all zero:", bool((layer.lora_B.grad == 0).all()))
# B moves first; once it is non-zero, A learns too. Had both started random, step 0 would not be the base model.

# %% [markdown]
# ## What you learned
#
# * **NF4**'s 16 levels are quantiles of a normal distribution, with an exact zero and exact ends: trained weights
#   use its codes almost evenly, and it rounds them with less error than INT4 at the same bits and block scale.
# * **Double quantization** stores the per-64 absmax in 8 bits (one float32 scale per 256 of them): 4.127 bits per
#   weight instead of 4.5.
# * **bitsandbytes** is the library: `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
#   bnb_4bit_use_double_quant=True)` in transformers, `Linear4bit` underneath; qtutor's NF4 writes its bytes.
# * **QLoRA** fine-tunes through adapters beside a frozen NF4 base: step 0 is the base, only $A$ and $B$ train,
#   and the training state is a small fraction of full fine-tuning's. On SmolLM2 a short run on news lowered
#   held-out news perplexity below the NF4 base's.
