# %% [markdown]
# # 15 · Choosing a method
#
# The course has shown one method at a time. This notebook puts them side by side on the same model and the same
# text, asks what happens when the calibration text is not the text the model will see, and ends with a
# decision rule you can drive: your hardware, your model, your memory, your tolerance in, a method and a format
# out — with what the tiny model measured for that choice next to it.

# %%
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval import advisor
from qtutor.eval.perplexity import perplexity
from qtutor.eval.sweep import evaluate, sweep
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
model, tokenizer = qt.load_model("tiny")
TOKENS = 4096  # test tokens per point: enough to rank the variants, small enough for a 3-minute notebook
calib = qt.data.calibration(n_samples=32, seq_len=256)  # 8192 wiki train tokens for GPTQ and AWQ

# %% [markdown]
# ## The full table
#
# Every method of the course that quantizes weights, at the formats it is used with, on the first 4096 test
# tokens (ctx 256, stride 128). GPTQ and AWQ see 32 calibration windows of wiki *train* text; RTN and the GGUF mixes see nothing
# but the weights. (The GGUF mixes also quantize the embedding, which the other rows leave in float32, so their
# bits per weight count it too.)
#
# From a terminal, `qtutor sweep --methods rtn,gptq,awq --formats int3,int4 --group-sizes -1,128
# --mixes Q3_K_M,Q4_K_M,Q6_K` measures the same kind of table on the whole test split.

# %%
# first the variants that need no calibration data: the float formats, RTN and the GGUF mixes
configs = [("FP32", None, "fp32", None, None),
           ("RTN INT8 per-channel", "rtn", "int8", -1, True),
           ("RTN FP8 E4M3 per-channel", "rtn", "fp8_e4m3", -1, None),
           ("RTN NF4 (64)", "rtn", "nf4", 64, None),
           ("RTN NVFP4", "rtn", "nvfp4", 16, None),
           ("RTN MXFP4", "rtn", "mxfp4", 32, None),
           ("RTN INT4 g128", "rtn", "int4", 128, False),
           ("RTN INT4 per-channel", "rtn", "int4", -1, False),
           ("RTN INT3 g128", "rtn", "int3", 128, False)]
for mix in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"):
    configs.append((mix, "gguf", mix, None, None))
rows = sweep(model, tokenizer, configs, max_tokens=TOKENS, progress=False)

# %%
# then the calibrated methods, on the same 32 windows of Wikipedia training text
for label, method, fmt, group in (("GPTQ INT4 g128", "gptq", "int4", 128), ("AWQ INT4 g128", "awq", "int4", 128),
                                  ("GPTQ INT4 per-channel", "gptq", "int4", -1), ("GPTQ INT3 g128", "gptq", "int3", 128)):
    point = evaluate(model, tokenizer, method, fmt, group, False, max_tokens=TOKENS, calib=calib,
                     baseline=rows[0]["ppl"])
    rows.append({"label": label, **point})
for row in sorted(rows, key=lambda r: -r["bits_per_weight"]):
    print(f"{row['label']:26s} {row['bits_per_weight']:6.3f} bits/weight   perplexity {row['ppl']:8.2f}  "
          f"({row['delta_pct']:+6.1f} %)")

# %%
figures.pareto(rows[1:], reference=rows[0]["ppl"], label="label",
               title="The tiny model: perplexity against bits per weight, every method")
plt.show()

# %% [markdown]
# What to read in it:
#
# * **8 bits are free** in every flavour (INT8, FP8, Q8_0).
# * **At 4 bits with small groups this model loses nothing measurable**, whatever the method or format: the
#   spread of a few tenths of a percent between RTN, GPTQ, AWQ, NF4, MXFP4 and NVFP4 at g128 and finer is the
#   noise of a 4096-token measurement. On 7B–70B models the same settings cost 1–8 %, and there the
#   calibrated methods earn their keep.
# * **Where rounding does lose, GPTQ wins most of it back**: with one scale per row (INT4 per-channel) and at
#   3 bits, GPTQ's loss is a fraction of RTN's at exactly the same size.
# * **The k-quant mixes** spend more bits on the tensors that need them (and quantize the embedding too): Q3_K_M
#   sits between INT3 and INT4 in size, and at the INT4 level in quality.
#
# The lower-left edge of the plot (the Pareto front) is where to shop: these variants are not beaten on both
# size and perplexity by another one.

# %%
front = figures.pareto_front(rows[1:])
print("Pareto front:", ", ".join(row["label"] for row in front))

# %% [markdown]
# ## Calibration mismatch
#
# GPTQ fits each layer to its calibration inputs. What if those are news and the model will read Wikipedia,
# or the other way round? Calibrate on each source, evaluate on each test text (INT3 g128, where the
# method's choices matter most):

# %%
sources = {"wiki": calib, "news": qt.data.calibration(n_samples=32, seq_len=256, source="news")}
mismatch = {}
for source, data in sources.items():
    with qt.quantize_model(model, "gptq", "int3", 128, calib=data, progress=False):
        for split in ("test", "news"):
            mismatch[source, split] = perplexity(model, tokenizer, split=split, max_tokens=TOKENS)
reference = {split: perplexity(model, tokenizer, split=split, max_tokens=TOKENS) for split in ("test", "news")}
print("GPTQ INT3 g128          evaluated on wiki test   evaluated on news")
for source in sources:
    cells = [f"{mismatch[source, split]:8.2f} ({100 * (mismatch[source, split] / reference[split] - 1):+5.1f} %)"
             for split in ("test", "news")]
    print(f"calibrated on {source:4s}     {cells[0]:>22s}   {cells[1]:>18s}")

# %% [markdown]
# Read the table by columns: each column is one evaluation text, and the question is whether the row that
# matches it (the diagonal) is the lower one. On this small, forgiving model the differences are tenths of a
# percent and need not follow the diagonal. On large models the effect is real — the AWQ paper (Lin et al.,
# 2023) measured GPTQ degrading when calibrated on one domain and evaluated on another, and AWQ, which only
# uses activation magnitudes, degrading less. The practical rule stands: calibrate on text like the text the
# model will serve (chat, code, another language), and measure perplexity on that text too, not only on
# Wikipedia.
#
# ## The decision rule
#
# `qtutor.eval.advisor.recommend` asks the questions in a practitioner's order: *where will it run* (the hardware
# decides which formats have fast kernels), *does it fit* (most bits first; the first candidate within the
# memory wins), *is it good enough* (the typical loss of that bit-width on 7B–70B models against your
# tolerance), and *is there calibration data* (GPTQ, AWQ or an importance matrix below 5 bits; rounding with
# small groups without). Its docstring states the rule in full.
#
# Move the controls: the bars are the memory each candidate needs, the dashed line your budget, the red bar the
# choice; the line above the chart says what the tiny model measured for the same method and format.

# %% tags=["nbval-ignore-output"]
widgets.MethodAdvisor(rows, hardware="cpu", size="8B", memory_gb=8)

# %% [markdown]
# The same rule for four common situations (memory in GB; the rule does not depend on the tiny model, so these
# lines are checked when the notebook is tested):

# %% tags=["nbval-check-output"]
situations = [("8B on a 16 GB laptop", 8e9, 16, "cpu", True), ("8B on an 8 GB laptop, no data", 8e9, 8, "cpu", False),
              ("70B on one 80 GB H100", 70e9, 80, "hopper", True), ("70B on a 48 GB A6000", 70e9, 48, "ampere", True),
              ("32B on a 32 GB RTX 5090", 32e9, 32, "blackwell", True), ("fine-tune 8B on a 24 GB GPU", 8e9, 24,
                                                                           "hopper", True)]
for title, parameters, memory, hardware, has_data in situations:
    advice = advisor.recommend(parameters, memory, hardware, calibration=has_data, finetune=title.startswith("fine"))
    low, high = advice.expected_loss_pct
    expected = f"expected +{low:g} to +{high:g} %" if high else "no quantization loss"
    print(f"{title:32s} -> {advice.choice.label:34s} {advice.gb:5.1f} GB, {expected}")

# %% [markdown]
# ## What this table cannot tell you
#
# * **Speed.** Bits per weight set the memory and, for decoding, the memory traffic; whether a format is *fast*
#   depends on kernels for your hardware (notebook 14), which is why the rule asks for the hardware first.
# * **Scale.** The tiny model has 6 M parameters and no strong outlier channels (notebook 05); large models
#   have both more redundancy (they quantize *better* at 4 bits) and outliers (which punish per-tensor INT8
#   activations). Trust the orderings here more than the percentages.
# * **Tasks.** Perplexity is a proxy. Before shipping a quantized model, evaluate it on what it will do.
