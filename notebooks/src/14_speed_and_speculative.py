# %% [markdown]
# # 14 · Why quantized models are fast (or not): decode speed and speculative decoding
#
# "Why is my 4-bit model slower than fp16?" is one of the questions asked most often in the bitsandbytes and
# torchao trackers. Every notebook so far measured what quantization costs in *accuracy*, and did it by
# fake-quantizing: rounding each weight to the grid and storing the rounded value back as float32. That says
# nothing about speed: the model still reads four bytes per weight. This notebook measures speed on your own
# machine, live, and shows where it comes from:
#
# 1. decoding one token reads every weight once, so it is limited by memory bandwidth, not arithmetic (the
#    roofline);
# 2. fewer bits per weight are faster **only where a kernel reads the packed codes** and turns them into numbers
#    in registers; without one, a format is slower than float;
# 3. a quantized copy of a model can draft tokens for the model itself (**speculative decoding**), and the text
#    stays exactly the model's own.
#
# The real model is SmolLM2-135M. Its file ships the weights as **Q4_1** (blocks of 32, an fp16 scale and
# minimum), so the course's "float" SmolLM2 is those 4-bit weights expanded to float32 — a real working model.
#
# **Timings in this notebook are yours:** they are measured as the cells run and differ from machine to machine
# and run to run. The prose quotes what the course's 2-core Xeon measured; the *order* of the results is what
# should carry over. Only claims that hold on any x86-64 CPU are checked.

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import qtutor as qt
from qtutor.eval import footprint as fp
from qtutor.eval import speed
from qtutor.eval.divergence import compare, reference
from qtutor.eval.generation import greedy_tokens
from qtutor.eval.perplexity import score
from qtutor.eval.speculative import expected_speedup, expected_tokens_per_round, speculate
from qtutor.model.packed import packed_linears
from qtutor.viz.figures import roofline_chart

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
MB, GB = 1e6, 1e9

# %% [markdown]
# ## Decoding reads every weight, once per token
#
# At batch size $M$, a linear layer $y = x W^\top$ with $W$ of $N \times K$ does $2MNK$ floating-point
# operations (a multiply and an add per weight and row of $x$) and must read the $NK$ weights at least once. With
# $b$ bits per weight, its **arithmetic intensity** is
#
# $$I = \frac{\text{flops}}{\text{bytes read}} = \frac{2MNK}{NK\,b/8} = \frac{16M}{b}\ \text{flop per byte.}$$
#
# A processor that moves $B$ bytes/s from memory and computes at most $P$ flop/s reaches at most
#
# $$\text{attainable flop/s} = \min(P,\ I \times B),$$
#
# the **roofline** (Williams, Waterman and Patterson, 2009). A CPU core computes tens of flops in the time its
# memory delivers one byte, so decoding at $M = 1$ ($I = 0.5$ in float32) sits far down the bandwidth slope: the
# time per token is the bytes of the weights divided by the bandwidth, and **every bit saved is time saved** — if
# something reads the bits as they are stored.

# %% tags=["nbval-check-output"]
smol, smol_tok = qt.load_model("smollm2")
config = smol.config
linears = qt.model.linear_layers(smol)
read_per_token = sum(layer.in_features * layer.out_features for layer in linears)  # incl. the output head
print(f"SmolLM2-135M: {len(linears)} linear layers, {read_per_token / 1e6:.1f} M weights read per generated token "
      f"(the 30 blocks and the {config.vocab_size:,} x {config.hidden_size} output head)")
print(f"\n{'format':12s} {'bits/weight':>11s} {'MB read per token':>18s} {'intensity at M=1':>17s} {'at M=16':>8s}")
formats = {"float32": ("fp32", None), "bfloat16": ("bf16", None), "INT8 per-ch": ("int8", -1),
           "INT4 g64": ("int4", 64)}
at_batch_1 = {}
for label, (fmt, group) in formats.items():
    bits = fp.footprint(read_per_token, fmt, group if group else "default", sym=False if fmt == "int4" else None)
    at_batch_1[label] = speed.intensity(1, bits.bits_per_weight)
    print(f"{label:12s} {bits.bits_per_weight:11.3f} {bits.bytes / MB:18.1f} "
          f"{at_batch_1[label]:17.2f} {speed.intensity(16, bits.bits_per_weight):8.1f}")
claim("at batch 1 every format does fewer than 4 flops per byte it reads", max(at_batch_1.values()) < 4)

# %% [markdown]
# ## This machine's roofline, measured
#
# Two numbers make the roofline: the **bandwidth**, measured as NumPy copies one 256 MiB buffer into another
# (STREAM's "copy": every byte read once and written once, both counted; 512 MiB touched, more than a CPU's
# cache holds), and the **peak**, the float32 rate of a
# large matrix product in torch. Their ratio is the *ridge*: a kernel with fewer flops per byte than that is
# limited by memory.

# %%
bandwidth = speed.copy_bandwidth(n_bytes=1 << 28, repeats=3)
peak = speed.matmul_peak()
print(f"memory bandwidth {bandwidth / GB:.1f} GB/s, float32 matmul peak {peak / GB:.0f} Gflop/s: "
      f"the ridge at {peak / bandwidth:.1f} flop/byte")
print(f"SmolLM2 in float32 reads {4 * read_per_token / MB:.0f} MB per token: at most "
      f"{bandwidth / (4 * read_per_token):.0f} tokens/s on this machine, however fast its arithmetic")

# %% [markdown]
# ## One layer, every way of storing it
#
# A decode-shaped layer (4096 × 4096 at batch 1, the size of a 7B model's attention projection) computed in
# every way the course can run it, each timed as the best of five calls:
#
# * **float32** and **bfloat16**: torch's matrix product (BLAS).
# * **int8 / int4 kernel**: torch's weight-only CPU kernels read our RTN codes packed (`qtutor.model.packed`:
#   `torch._weight_int8pack_mm`, one scale per output row; `_weight_int4pack_mm_for_cpu`, two codes per byte and
#   a scale and offset per group of 64). They were written for **bfloat16 activations**; with float32 ones they
#   take a generic path.
# * **fake-quant**: the int4 codes and scales stored, and dequantized to a float32 matrix on every call, then
#   multiplied — what a format without a kernel must do.
# * **NF4**: no CPU kernel at all; a 16-entry table lookup to float32, then the product.

# %%
N = K = 4096
rows = speed.gemv_times(N, K, group_size=64)
print(f"{'variant':34s} {'time':>9s} {'weights':>8s} {'GB/s':>6s} {'vs float32':>10s}")
for row in rows:
    if row["seconds"] is None:
        print(f"{row['label']:34s} {row['note']}")
        continue
    print(f"{row['label']:34s} {row['seconds'] * 1e6:7.0f} us {row['bytes'] / MB:6.1f} MB {row['bytes_per_s'] / GB:6.1f} "
          f"{row['vs_float32']:9.2f}x")
points = [{"label": row["label"], "intensity": 2 * N * K / row["bytes"], "flops_per_s": row["flops_per_s"]}
          for row in rows if row["seconds"] is not None]
roofline_chart(points, bandwidth, peak, title=f"this machine's roofline: one {N} x {K} layer at batch 1")
plt.show()

# %% [markdown]
# The figures move a lot from run to run on a shared machine (float32 itself varied by 2× between the course's
# runs), but the order held in every run on the course's 2-core cloud machines: the int8 and int4 kernels with
# bf16 activations several times faster than float32 (2.8× to 10×), bfloat16 a little faster (1.3× to 3×), and
# everything else *slower*: the kernels' own float32 path 2× to 11× slower, fake-quant int4 20× to 35×, the NF4
# lookup 30× to 100×. Read the roofline from left to right:
#
# * The kernels read fewer bytes, so their points sit further right: at the same bandwidth, more flops per
#   second. Whether they land on the slope depends on the CPU: unpacking nibbles, scaling and converting cost
#   instructions, and bf16 arithmetic on a CPU without AMX is emulated in float32.
# * Fake-quant and NF4 sit far below the slope: they read the codes (a byte each here) *and then write and read
#   a float32 matrix* of 67 MB on every call. **This is the answer to "why is my 4-bit model slower than fp16"**: the
#   format has no kernel on that device, and the library dequantizes before the product.
# * A point *above* the slope is no error: a 67 MB matrix fits in a server's last-level cache (480 MiB on the
#   course's Xeon), so after the first call it is read from cache, faster than from DRAM. A laptop's 8–36 MB
#   cache does not hold it. A float32 point *below* the slope means that BLAS did not reach this machine's copy
#   bandwidth with the threads it had: one more reason to compare variants measured in the same run.
# * The same kernels on an old CPU, or with `ATEN_CPU_CAPABILITY=default` (no AVX2), are slower than float32:
#   they are vectorized code, and without vectors nibble-unpacking costs more than it saves.
#
# ## The whole model, token by token
#
# The same kernels swapped into all 210 linear layers of SmolLM2 (`packed_linears`, a context manager that puts
# the original layers back afterwards; the output head stays float32), timed on a greedy decode of 24 tokens at
# batch 1 from a short prompt, the prompt's prefill included:

# %%
prompt = qt.data.text("test")[:300]
DECODE_TOKENS = 24
head_bytes = 4 * config.vocab_size * config.hidden_size  # the float32 output head, read once per token
rates, bytes_per_token = {}, {}
rates["float32"], bytes_per_token["float32"] = (speed.decode_tokens_per_second(smol, smol_tok, prompt, DECODE_TOKENS),
                                                4 * read_per_token)
smol_bf16 = copy.deepcopy(smol).to(torch.bfloat16)
rates["bfloat16"] = speed.decode_tokens_per_second(smol_bf16, smol_tok, prompt, DECODE_TOKENS)
bytes_per_token["bfloat16"] = 2 * read_per_token
del smol_bf16
for label, fmt, kernel in (("int8 packed", "int8", True), ("int4 packed", "int4", True),
                           ("int4, no kernel", "int4", False)):
    with packed_linears(smol, fmt, group_size=64, kernel=kernel) as packed_report:
        if kernel and not packed_report.kernel:
            print(f"{label}: {packed_report.note}")
            continue
        rates[label] = speed.decode_tokens_per_second(smol, smol_tok, prompt, DECODE_TOKENS)
        bytes_per_token[label] = packed_report.packed_bytes + head_bytes
print(f"{'':16s} {'tokens/s':>8s} {'vs float32':>10s} {'MB per token':>12s} {'GB/s':>6s}")
for label, rate in rates.items():
    print(f"{label:16s} {rate:8.1f} {rate / rates['float32']:9.2f}x {bytes_per_token[label] / MB:12.0f} "
          f"{rate * bytes_per_token[label] / GB:6.1f}")
fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
ax.barh(list(rates), list(rates.values()), color=[f"C{0 if 'float' in label else 1}" for label in rates])
ax.invert_yaxis()
ax.set_xlabel("tokens/s, batch 1 (this machine, now)")
ax.set_title(f"SmolLM2-135M greedy decode, {DECODE_TOKENS} tokens after the prompt")
plt.show()

# %% [markdown]
# (The prompt's prefill is taken out: the rate is measured between the first token and the last.) On the
# course's machines int8 and int4 packed decoded 1.3× to 2.4× faster than float32, bfloat16 anywhere from a bit
# slower to 2× faster, and the same int4 codes *without* a kernel were slower than float32. The gains are
# smaller than for one big layer: SmolLM2's layers are small (576 × 1536), so
# per-call overheads, attention, the norms and the float32 output head (28 M weights, a fifth of all) weigh more.
# The packed model is a quantized model — RTN INT4 g64 with bf16 scales — so it also has INT4 g64's perplexity
# cost (+29 % on SmolLM2, notebook 04); speed and accuracy are two separate measurements.
#
# ## The GPU picture (stored)
#
# A GPU has far more bandwidth (an H100's HBM3 moves 3 TB/s) and far more arithmetic (780 Tflop/s in bf16), so
# its ridge sits near 260 flop/byte and decode is even more memory-bound than on a CPU. The project's kernel
# report (`shared/KERNELS.md`) measured torch's int4 GPU kernel (tinygemm) against cuBLAS bf16 on an H100:

# %% tags=["nbval-check-output"]
stored = speed.stored_gpu_rows()
print("stored H100 measurements (KERNELS.md; CUDA graphs, cold L2)")
print(f"{'layer N x K':14s} {'M':>3s} {'bf16':>9s} {'int4 g128':>10s} {'int4 vs bf16':>13s}")
for row in stored:
    print(f"{row['shape']:14s} {row['M']:3d} {row['bf16_us']:7.1f}us {row['int4_us']:8.1f}us {row['int4_vs_bf16']:12.2f}x")
for row in speed.STORED_H100["end_to_end"]:
    print(f"{row['model']:46s} {row['float_tok_s']:6.1f} -> {row['int4_tok_s']:6.1f} tokens/s "
          f"({row['int4_tok_s'] / row['float_tok_s']:.1f}x)")
for line in speed.STORED_H100["notes"]:
    print("-", line)
claim("on the H100 the int4 kernel is over 2x faster than bf16 at batch 1 and slower than bf16 at batch 16",
      all(r["int4_vs_bf16"] > 2 for r in stored if r["M"] == 1)
      and all(r["int4_vs_bf16"] < 1 for r in stored if r["M"] == 16))

# %%
live_rows, live_note = speed.live_gpu_rows()
print(live_note)
gpu_rows = live_rows or stored
h100 = speed.STORED_H100
gpu_points = []
for row in gpu_rows:
    n, k = (int(v) for v in row["shape"].split(" x "))
    for kind, seconds, bytes_ in (("bf16", row["bf16_us"], 2 * n * k), ("int4", row["int4_us"], n * k // 2 + n * k // 32)):
        gpu_points.append({"label": f"{kind} {row['shape']} M={row['M']}", "intensity": 2 * row["M"] * n * k / bytes_,
                           "flops_per_s": 2 * row["M"] * n * k / (seconds * 1e-6)})
roofline_chart(gpu_points, h100["hbm_bytes_per_s"], h100["bf16_flops_per_s"],
               title="H100 roofline (stored figures)" if live_rows is None
               else "this GPU's kernels, measured now (the roofs: the stored H100's)")
plt.show()

# %% [markdown]
# At batch 1 the int4 kernel reads a quarter of bf16's bytes and takes 2.3–2.6× less time, close to the slope.
# At batch 16 the bf16 product barely slows down (it was waiting for memory, not arithmetic) while the int4
# kernel slows 4×: dequantizing 16 rows' worth of work on the fly becomes the bottleneck, its point falls below
# the slope. Kernels such as Marlin (IST-DASLab) are built to keep the 4× gain up to batch 16–32 — which is why
# a server choosing a format asks *which kernel* it will run at *which batch size*, not just how many bits.
#
# ## Speculative decoding: a quantized model drafts for itself
#
# Reading the weights for 5 positions costs about what reading them for 1 does: at batch 1 the GPU or CPU waits
# for memory either way. **Speculative decoding** (Leviathan, Kalman and Matias 2023; Chen et al. 2023) turns
# that into speed. A cheap *draft* model proposes $k$ tokens one by one; the *target* checks all $k$ in **one**
# forward pass; the proposals are kept left to right while they are what the target would have chosen (greedy),
# or with probability $\min(1, p(x)/q(x))$ when sampling, with a replacement drawn from
# $\max(0, p - q)$ at the first rejection. Each round adds between 1 and $k+1$ tokens for one target forward,
# and the text is **exactly the target's**: a draft changes the speed, never the output
# (`tests/test_speculative.py` checks greedy equality token for token, and the sampling rule's distribution).
#
# If each proposal is accepted with probability $\alpha$, a round yields on average
# $E = (1 - \alpha^{k+1}) / (1 - \alpha)$ tokens, and with a draft forward costing $c$ target forwards the speed-up is
#
# $$S = \frac{1 - \alpha^{k+1}}{(1 - \alpha)(kc + 1)}.$$
#
# A quantized copy of the target is the natural draft: same tokenizer, mostly the same choices. How often it
# agrees can be measured without decoding at all. On the same 1024 test tokens, each draft's most likely next
# token is compared with the float model's at every position (greedy acceptance: llama.cpp's "same top p"), and
# $\sum_v \min(p(v), q(v))$ is averaged (the acceptance of speculative *sampling* at temperature 1). Then each
# draft really drafts: 32 tokens of greedy speculative decoding with $k = 4$.

# %%
float_ref = reference(smol, smol_tok, ctx=512, max_tokens=1024)
drafts = {"INT8 per-ch": ("rtn", "int8", -1), "NF4 g64": ("rtn", "nf4", 64), "INT4 g64": ("rtn", "int4", 64),
          "Q4_K_M": ("gguf", "Q4_K_M", "default"), "INT3 g64": ("rtn", "int3", 64), "INT2 g64": ("rtn", "int2", 64)}
agreement = {}
for label, (method, fmt, group) in drafts.items():  # SmolLM2 itself, quantized and put back
    with qt.quantize_weights(smol, method, fmt, group, progress=False):
        agreement[label] = compare(smol, float_ref)
positions = float_ref.n_tokens
del float_ref  # 200 MB of log-probabilities

# %%
LOOKAHEAD = 4
target_text = greedy_tokens(smol, smol_tok, prompt, 32)
runs = {}
for label, (method, fmt, group) in drafts.items():  # now a quantized copy drafts for the float model
    draft = copy.deepcopy(smol)
    qt.quantize_weights(draft, method, fmt, group, progress=False)
    runs[label] = speculate(smol, draft, smol_tok, prompt, max_new_tokens=32, lookahead=LOOKAHEAD)
    del draft
print(f"{'draft':12s} {'greedy accept':>13s} {'sampling accept':>15s} {'E tokens/round':>14s}"
      f" | live: {'alpha':>5s} {'tokens/target fwd':>17s}  same text")
for label, point in agreement.items():
    run = runs[label]
    alpha = point["same_top_pct"] / 100
    print(f"{label:12s} {point['same_top_pct']:12.1f}% {point['overlap_pct']:14.1f}% "
          f"{expected_tokens_per_round(alpha, LOOKAHEAD):14.2f} | {100 * run.acceptance_rate:10.0f}% "
          f"{run.tokens_per_target_forward:17.2f}  {run.tokens == target_text}")

# %% tags=["nbval-check-output"]
def apart(a, b):
    """Greedy agreement of draft a above b's by more than two standard errors (binomial, over the positions)."""
    pa, pb = agreement[a]["same_top_pct"] / 100, agreement[b]["same_top_pct"] / 100
    return pa - pb > 2 * np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / positions)
order = ["INT8 per-ch", "INT4 g64", "INT3 g64", "INT2 g64"]
claim("greedy acceptance falls as the draft is rounded harder: INT8 > INT4 g64 > INT3 g64 > INT2 g64, each step "
      "outside two standard errors", all(apart(a, b) for a, b in zip(order, order[1:])))
claim("sampling acceptance falls in the same order",
      all(agreement[a]["overlap_pct"] > agreement[b]["overlap_pct"] for a, b in zip(order, order[1:])))
claim("an INT8 draft would keep over 90 % of its greedy proposals, an INT2 g64 draft under 20 %",
      agreement["INT8 per-ch"]["same_top_pct"] > 90 > 20 > agreement["INT2 g64"]["same_top_pct"])

# %%
labels = list(agreement)
x = np.arange(len(labels))
fig, ax = plt.subplots(figsize=(8, 3.6), constrained_layout=True)
ax.bar(x - 0.27, [agreement[name]["same_top_pct"] for name in labels], 0.27, label="greedy (same top token)")
ax.bar(x, [agreement[name]["overlap_pct"] for name in labels], 0.27, label="sampling (sum of min(p, q))")
ax.bar(x + 0.27, [100 * runs[name].acceptance_rate for name in labels], 0.27, label="live greedy run, 32 tokens (α)")
ax.set_xticks(x, labels)
ax.set_ylabel("% of proposals accepted")
ax.set_title("SmolLM2 drafting for itself: acceptance falls as the draft is quantized harder")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# An INT8 draft agrees with the float model almost everywhere; INT4 g64 (+29 % perplexity) still agrees on most
# tokens; INT2 g64, whose perplexity is in the hundreds of thousands, almost never. The live runs' α (kept over
# *judged* proposals: those after a rejection are thrown away unjudged) follows the same order, with the
# scatter of 32 tokens from another text than the 1024 test tokens, and their output is the target's greedy
# text. (In float32, a batched forward and a one-token forward can round a
# near-tied pair of logits differently; the test suite checks the equality in float64, where no tie is that
# close.) Q4_K_M, at about 6 bits per weight on this model, agrees far more often than INT4 g64.
#
# ## Is it faster?
#
# Agreement is half of the speed-up; the other half is the draft's cost $c$. The draft here is the *same* model,
# only packed: it reads 4 bits a weight instead of 32, and the measured decode rates above give its cost
# $c$ = (float32 rate) / (int4 packed rate). Timed for real, with the packed int4 copy drafting:

# %%
draft = copy.deepcopy(smol)
with packed_linears(draft, "int4", group_size=64):
    started = time.perf_counter()
    plain = greedy_tokens(smol, smol_tok, prompt, 32)
    plain_rate = len(plain) / (time.perf_counter() - started)
    started = time.perf_counter()
    run = speculate(smol, draft, smol_tok, prompt, 32, LOOKAHEAD)
    spec_rate = len(run.tokens) / (time.perf_counter() - started)
del draft
cost = rates["float32"] / rates["int4 packed"] if "int4 packed" in rates else 1.0
print(f"draft cost c = {cost:.2f} target forwards, acceptance α = {run.acceptance_rate:.2f}")
print(f"plain greedy {plain_rate:.1f} tokens/s, speculative {spec_rate:.1f} tokens/s: {spec_rate / plain_rate:.2f}x "
      f"(the formula says {expected_speedup(run.acceptance_rate, LOOKAHEAD, cost):.2f}x)")

# %% [markdown]
# On the course's machines the packed draft cost $c \approx 0.4$–$0.6$ of a target forward, and speculative
# decoding came out *slower* than plain decoding (0.7× to 0.8×), below even the formula, which counts the
# target's forward over $k+1$ positions as one and ignores the bookkeeping (cropping two caches each round).
# A draft that is the same network, only read in fewer bytes, saves too little per token to pay for the
# rejected proposals and for the target's longer forward. The formula says what a draft must be:

# %% tags=["nbval-check-output"]
print(f"speed-up S at lookahead k = {LOOKAHEAD}")
print(f"{'draft cost c':>12s} " + " ".join(f"{'alpha=' + str(a):>9s}" for a in (0.5, 0.7, 0.9)))
for c in (0.02, 0.1, 0.3, 0.6):
    print(f"{c:12.2f} " + " ".join(f"{expected_speedup(a, LOOKAHEAD, c):9.2f}" for a in (0.5, 0.7, 0.9)))
claim("with a draft at 2 % of the target's cost and 70 % acceptance the speed-up is over 2x; at 60 % of its cost "
      "it is under 1.1x", expected_speedup(0.7, LOOKAHEAD, 0.02) > 2 > 1.1 > expected_speedup(0.7, LOOKAHEAD, 0.6))

# %% [markdown]
# Speculative decoding pays when the draft is **much** cheaper than the target: in practice a model ten to a
# hundred times smaller *of the same family* (the same tokenizer), such as a 1B draft for a 70B target, often
# itself quantized; on a GPU, where the target's forward over $k+1$ positions costs the same as over one, the
# gain is larger still. A quantized copy of the target is what the seeds call the trend to watch: it agrees
# best, and on GPUs with int4 kernels its cost falls towards a quarter.
#
# Could the course's tiny model draft for SmolLM2? It is 20 times smaller — but it speaks another language:

# %%
tiny, tiny_tok = qt.load_model("tiny")

# %% tags=["nbval-check-output"]
try:
    speculate(smol, tiny, smol_tok, prompt, max_new_tokens=8)
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# The acceptance test compares $p(x)$ and $q(x)$ for the *same token id* $x$, so the draft must share the
# target's tokenizer, id for id.
#
# ## A bigger 4-bit model or a smaller float one?
#
# Notebook 03 did the memory arithmetic: at a fixed budget of bytes, a model with more parameters in fewer bits
# per weight usually beats a smaller model in float (Dettmers and Zettlemoyer 2023, "the case for 4-bit
# precision"). The two models here use different tokenizers, so their perplexities per token cannot be compared;
# **bits per byte** of the same text can (the summed NLL in bits over the text's UTF-8 bytes).

# %%
passage = qt.data.text("test")[:6000]
n_bytes = len(passage.encode("utf-8"))
smol_ids = np.asarray(smol_tok.encode(passage), dtype=np.int64)
tiny_ids = np.asarray(tiny_tok.encode(passage), dtype=np.int64)
window = dict(ctx=256, stride=256, progress=False)
scores = {"SmolLM2 float": score(smol, smol_tok, tokens=smol_ids, **window),
          "tiny float": score(tiny, tiny_tok, tokens=tiny_ids, **window)}
with qt.quantize_model(smol, "rtn", "int4", 64, sym=False, progress=False) as int4_report:
    scores["SmolLM2 INT4 g64"] = score(smol, smol_tok, tokens=smol_ids, **window)
parameters = {"SmolLM2": sum(p.numel() for p in smol.parameters()), "tiny": sum(p.numel() for p in tiny.parameters())}
int4_weights = sum(layer.shape[0] * layer.shape[1] for layer in int4_report.layers)
sizes = {"SmolLM2 float": 4 * parameters["SmolLM2"],  # the tied embedding (the output head) counted once
         "SmolLM2 INT4 g64": int4_report.nbytes + 4 * (parameters["SmolLM2"] - int4_weights),  # embedding float32
         "tiny float": 4 * parameters["tiny"]}
bpb = {label: result.bits_per_byte(n_bytes) for label, result in scores.items()}
print(f"the first {len(passage):,} characters of the test text: {len(smol_ids):,} SmolLM2 tokens, "
      f"{len(tiny_ids):,} tiny-model tokens")
for label, (bits, stderr) in bpb.items():
    print(f"{label:17s} {sizes[label] / MB:6.1f} MB of weights   {bits:.3f} +- {stderr:.3f} bits per byte")
int4_cost = scores["SmolLM2 INT4 g64"].compare(scores["SmolLM2 float"])
print(f"SmolLM2 INT4 g64 against float on the same tokens: perplexity {qt.notebook.percent(int4_cost['delta_pct'])} "
      f"+- {int4_cost['delta_pct_stderr']:.1f} (paired)")

# %% tags=["nbval-check-output"]
claim("SmolLM2 at INT4 g64 predicts the text worse than in float, outside two paired standard errors",
      int4_cost["significant"] and int4_cost["delta_pct"] > 0)
(b_int4, e_int4), (b_tiny, e_tiny) = bpb["SmolLM2 INT4 g64"], bpb["tiny float"]
claim("and still far better than the tiny model in float, which needs over 1.5 times the bits per byte",
      b_tiny > 1.5 * b_int4 and b_tiny - b_int4 > 4 * np.hypot(e_int4, e_tiny))

# %% [markdown]
# SmolLM2 with its 210 linear layers at 4 bits takes a third of its float32 memory (the embedding, shared with
# the output head, stays float32 here; GGUF mixes store it in 6 or 8 bits too) and pays for it: the paired
# perplexity change is notebook 04's INT4 g64 cost, under a tenth of a bit per byte; the tiny model, although it was trained on this
# very kind of news text, predicts it about twice as badly in bits per byte. With memory as the limit, the larger
# model in fewer bits is the better buy — until the bits get so few that the model breaks (INT3 and INT2 above:
# notebook 04's curve).
#
# ## Deployment: which engine serves which format
#
# A format is only as fast as the engine that has a kernel for it on your hardware:
#
# | engine | hardware | formats it runs fast |
# |---|---|---|
# | **llama.cpp** (and Ollama, LM Studio on top of it) | CPU (x86 AVX2/AVX-512, ARM NEON), Apple Metal, CUDA, Vulkan | GGUF: Q8_0, K-quants (Q6_K … Q2_K), i-quants (IQ4_XS … IQ1_S) |
# | **vLLM**, **SGLang** | NVIDIA / AMD GPUs | AWQ and GPTQ (Marlin kernels), FP8 W8A8, INT8 W8A8 (SmoothQuant), NVFP4 / MXFP4 on Blackwell, compressed-tensors checkpoints |
# | **TensorRT-LLM** | NVIDIA GPUs | FP8, INT4 AWQ, INT8 SmoothQuant, NVFP4 (ModelOpt) |
# | **ExLlamaV2 / V3** | NVIDIA GPUs | EXL2 / EXL3 (mixed bits per layer) |
# | **bitsandbytes** in transformers | NVIDIA GPUs (CPU in part) | LLM.int8(), NF4 / FP4 (QLoRA): made to save memory, not for speed at batch 1 |
# | **torchao** | GPUs, CPU | int4 / int8 weight-only (the kernels timed above), FP8 |
#
# The decision rule of notebook 15, with speed added:
#
# * **Memory first:** the model, its KV cache and the activations must fit (notebooks 03, 13).
# * **Then the kernel:** pick among the formats your engine has a kernel for *on your hardware*; anything else is
#   fake-quant, slower than float. On a CPU: llama.cpp's GGUF types, or torch's int8/int4 weight-only kernels.
# * **Then the batch:** at batch 1 (one user, a laptop) decode is memory-bound and weight-only 4-bit gives the
#   most tokens/s; a server at batch 32+ becomes compute-bound, where W8A8 (FP8, INT8) that also speeds up the
#   arithmetic beats weight-only int4.
# * **Then the accuracy:** measure perplexity or KL on your own text, with its standard error (notebooks 04, 15).
# * **Speculative decoding** adds speed without changing the text, given a draft ten times cheaper or more that
#   shares the tokenizer.
#
# ## Exercise
#
# Your machine's draft cost $c$ is printed above. Which lookahead $k$ from 1 to 8 gives the best speed-up for
# the INT4 g64 draft's greedy agreement measured on 1024 tokens? And for a draft ten times cheaper ($c / 10$)?

# %% tags=["solution"]
alpha_int4 = agreement["INT4 g64"]["same_top_pct"] / 100
for c in (cost, cost / 10):
    speedups = {k: expected_speedup(alpha_int4, k, c) for k in range(1, 9)}
    best = max(speedups, key=speedups.get)
    print(f"c = {c:.3f}: best k = {best}, speed-up {speedups[best]:.2f}x")
