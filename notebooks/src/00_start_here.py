# %% [markdown]
# # 00 · Start here
#
# Welcome to **qtutor**, a workbook for learning how large language models are quantized — stored in 8, 4,
# even 2 bits per weight instead of 16 — by doing it yourself, on a real (small) model that runs on a laptop.
#
# Every method in the course is implemented from first principles in the `qtutor` package, in NumPy you can
# read (and, on a GPU, in CUDA kernels that give the same answers). The notebooks call it, show what happens
# inside, and let you move the knobs.
#
# ## The map
#
# | notebook | you will |
# |---|---|
# | [01 · Number formats](01_number_formats.ipynb) | read INT, FP8, FP4, MX, NVFP4 and NF4 bit by bit |
# | [02 · Affine quantization and granularity](02_affine_quantization.ipynb) | build scales and zero points; see why groups of 128 |
# | [03 · Memory math and footprints](03_memory_math.ipynb) | recompute the "will it fit?" table, KV cache included |
# | [04 · RTN on a real model](04_rtn_real_model.ipynb) | round a real model's weights and watch perplexity move |
# | [05 · Outliers and LLM.int8()](05_outliers_llm_int8.ipynb) | measure outlier channels; split a matmul in two |
# | [06 · GPTQ](06_gptq.ipynb) | step through GPTQ column by column; beat rounding on the real model |
# | [07 · AWQ](07_awq.ipynb) | find salient channels; search AWQ's scaling exponent; AWQ against RTN |
# | [08 · SmoothQuant, W8A8 and W4A4](08_smoothquant.ipynb) | migrate outliers from activations to weights; run W8A8 and W4A4; rotate for W4A4 |
# | [09 · NF4, bitsandbytes and QLoRA](09_nf4_bitsandbytes_qlora.ipynb) | why NF4's levels are normal quantiles; double quantization's bytes; bitsandbytes beside qtutor; fine-tune SmolLM2 on a 4-bit base |
# | [10 · GGUF k-quants and export](10_gguf_kquants.ipynb) | open a Q4_K block byte by byte; write a `.gguf` |
# | [11 · FP8, FP4, MX and NVFP4 on a model](11_fp8_fp4_mx_nvfp4.ipynb) | which GPU runs which format; W8A8 in FP8 against INT8; a real MXFP4 and NVFP4 block byte by byte; RTN, GPTQ and MR-GPTQ on 4-bit blocks; ship a compressed-tensors checkpoint vLLM reads |
# | [12 · Below 3 bits](12_below_3_bits.ipynb) | see why 4 levels fail; vectors, the E8 lattice and incoherence; step AQLM's beam search; QuIP#, AQLM, VPTQ against RTN and GPTQ |
# | [13 · KV-cache quantization](13_kv_cache.ipynb) | size the KV cache; quantize SmolLM2's keys and values per token and per channel |
# | [14 · Speed and speculative decoding](14_speed_and_speculative.ipynb) | why 4 bits is fast only with a kernel; the roofline; a quantized model drafting for itself |
# | [15 · Choosing a method](15_choosing_a_method.ipynb) | every method in one table; calibration mismatch; a decision rule |
# | [16 · GGUF below 4 bits](16_gguf_iquants_imatrix.ipynb) | open an IQ2_XXS block; see why grids of 8 weights; when the importance matrix helps and when it lies |
# | [17 · Quantization-aware training](17_qat_llm_qat.ipynb) | the STE and LSQ; QAT against RTN and GPTQ; LLM-QAT without data, the KV cache trained in |
#
# ## Check your environment
#
# The cell below says whether a GPU is available (everything works without one), and which versions run.

# %%
import numpy as np
import qtutor as qt

qt.setup_notebook(seed=0)

# %% [markdown]
# ## Three things to try now
#
# **1. Quantize a matrix.** Four bits per weight with one scale (and zero point) per group of 128 weights:

# %% tags=["nbval-check-output"]
W = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
q = qt.quantize_tensor(W, fmt="int4", group_size=128)
print(q)
print("mean |error|", qt.notebook.fmt(np.abs(q.dequantize() - W).mean()))

# %% [markdown]
# **2. Count the bytes.** A 70-billion-parameter model in FP16 and in 4 bits:

# %% tags=["nbval-check-output"]
for fmt in ("fp16", "int4", "Q4_K_M"):
    print(f"70B in {fmt:7s}: {qt.footprint(70e9, fmt).gb:6.1f} GB")

# %% [markdown]
# **3. Load the course's model** and let it continue a sentence (it is small and was trained for half an hour
# on 0.8 M words of Wikipedia, so expect fluent-looking nonsense):

# %%
import torch

model, tokenizer = qt.load_model("tiny")
prompt = tokenizer("The history of the", return_tensors="pt")
with torch.no_grad():
    output = model.generate(**prompt, max_new_tokens=20, do_sample=False)
print(tokenizer.decode(output[0]))

# %% [markdown]
# ## The five-minute tour
#
# Quantize every linear layer of that model to INT4 (one scale per 128 weights), and measure what it costs in
# perplexity (the model's surprise at Wikipedia text it never saw; lower is better) and what it saves in memory:

# %%
from qtutor.eval.sweep import evaluate

before = evaluate(model, tokenizer, None, max_tokens=4096)
after = evaluate(model, tokenizer, "rtn", "int4", 128, max_tokens=4096, baseline=before["ppl"])
print(f"float32: perplexity {before['ppl']:.2f}, linear layers {before['bytes'] / 2**20:.1f} MiB")
print(f"INT4   : perplexity {after['ppl']:.2f} ({qt.notebook.percent(after['delta_pct'])}), "
      f"linear layers {after['bytes'] / 2**20:.1f} MiB")

# %% [markdown]
# Where these perplexities come from: the first 4096 tokens of the test split, scored in windows of 256 tokens
# that start every 128 (ctx 256, stride 128), the course's evaluation slice in every notebook. The model card
# (`qtutor/zoo/MODEL_CARD.md`) reports 164.55 for the *whole* test split (about 48,000 tokens) with the same
# windows, and `qtutor tour` scores the first 8192 tokens: other text, other perplexities. Compare figures only
# within one slice.

# %% [markdown]
# Nearly eight times smaller, and the perplexity barely moves: with one scale per 128 weights, 4-bit rounding
# costs this small model almost nothing (large models lose a percent or a few). Notebook 04 shows where rounding
# starts to hurt — fewer bits, coarser scales — notebook 06 how GPTQ wins part of it back, and notebook 15 how
# to choose.
#
# From a terminal, `qtutor tour` prints the same model's perplexity at a dozen formats, and `qtutor formats`
# every number format with its bits per weight.
#
# Next: [01 · Number formats](01_number_formats.ipynb).
