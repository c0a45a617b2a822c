# %% [markdown]
# # 15 · Choosing a method
#
# The course has shown one method at a time. This notebook puts them side by side on the same real model,
# SmolLM2-135M, and the same text; asks what happens when the calibration text is not the text the model will
# see; and ends with a decision rule you can drive: your hardware, your model, your memory, your tolerance in, a
# method and a format out, with what SmolLM2 measured for that choice next to it.

# %%
import numpy as np
import matplotlib.pyplot as plt
import qtutor as qt
from qtutor.eval import advisor
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.methods import awq, gptq, rtn
from qtutor.metrics import relative_output_error
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
smol, smol_tok = qt.load_model("smollm2")

# %% [markdown]
# ## The full table
#
# Every method of the course that quantizes weights, on **every linear layer** of SmolLM2 (the GGUF mixes quantize
# the tied embedding too, as llama.cpp does, and count it in their bits per weight). GPTQ and AWQ on the whole model
# take minutes each, more than this notebook's budget, so the table was measured once by
# `python tools/model_card_smollm2.py` (its model card, `qtutor/zoo/MODEL_CARD_SMOLLM2.md`, prints the same
# figures) and ships with the package as data; the next section re-measures three of its rows live.
#
# One caveat wherever SmolLM2 appears: its file stores the weights as **Q4_1** (blocks of 32, an fp16 scale and
# minimum), so the "float" model is those 4-bit weights expanded to float32, and every row re-rounds them.

# %%
card = qt.zoo.measurements("smollm2")
float_point = card["float"]
by_label = {row["label"]: row for row in card["rtn"] + card["calibrated"] + card["gguf"] + [card["llm_int8"]]}
rows = card["rtn"] + [row for row in card["calibrated"] if row["method"] != "rtn"] + card["gguf"] + [card["llm_int8"]]
print(f"float (Q4_1 expanded): perplexity {float_point['ppl']:.2f} +- {float_point['ppl_stderr']:.2f} on the {card['slice']}")
print(f"GPTQ calibrated on {card['calib_windows']['gptq']} windows of 256 wiki train tokens, "
      f"AWQ on {card['calib_windows']['awq']}\n")
print(f"{'variant':28s} {'bits/w':>6s} {'perplexity':>16s} {'change from float':>20s} {'KL':>7s} {'same top':>8s}")
for row in sorted(rows, key=lambda r: (-r["bits_per_weight"], r["ppl"])):
    noise = "  (noise)" if not row["significant"] else ""
    if row["ppl"] > 10 * float_point["ppl"]:  # a broken model: its digits say nothing
        print(f"{row['label']:28s} {row['bits_per_weight']:6.3f} {row['ppl']:9.3g}  broken{'':25s}"
              f"{row['kl']:7.2f} {row['same_top_pct']:7.1f} %")
        continue
    print(f"{row['label']:28s} {row['bits_per_weight']:6.3f} {row['ppl']:9.2f} +- {row['ppl_stderr']:<5.2f}"
          f"{qt.notebook.percent(row['delta_pct']):>11s} +- {row['delta_pct_stderr']:<5.1f} {row['kl']:7.4f} "
          f"{row['same_top_pct']:7.1f} %{noise}")

# %%
shown = [row for row in rows if row["method"] in ("rtn", "gptq", "awq", "gguf") and row["format"] != "bf16"]
figures.perplexity_points(shown, reference=float_point["ppl"], reference_stderr=float_point["ppl_stderr"],
                          labels=True, title="SmolLM2-135M: perplexity against bits per weight, every weight method "
                                f"({shown[0]['tokens']} test tokens)")
plt.show()

# %% [markdown]
# What to read in it:
#
# * **8 bits cost under 1 %** (INT8 per channel, Q8_0, BF16). INT8 with one scale per row is measurably not free on
#   this model; Q8_0, with one per 32 weights, is inside the noise.
# * **At 4 bits plain rounding costs a quarter or more**, and the format and granularity matter as much as the
#   bits: per row or in microscaling blocks with power-of-two scales (MXFP4) it costs two to three times what
#   groups of 64 cost.
# * **Calibrated methods earn their keep here.** At exactly the same size, GPTQ and AWQ remove about half of
#   what rounding loses, at 4 and at 3 bits (the gaps are printed below), far outside the noise. On the whole
#   model they take minutes; notebooks 06 and 07 show the same on half the layers in seconds.
# * **The K-quant mixes** spend more bits where they matter, and on this model more than their names say: every
#   576-wide tensor falls back to a legacy type (notebook 10), so Q4_K_M stores 6.2 bits per weight. It costs a
#   fifth of what RTN INT4 costs.
# * **A larger mix is not always better:** Q5_K_M loses more than Q4_K_M here. SmolLM2's float weights are the
#   file's Q4_1 (16 levels, a scale and a minimum per 32 weights), and Q4_K's sub-blocks have exactly that shape,
#   so Q4_K re-expresses much of the Q4_1 grid, while 5-bit grids do not line up with it (the model card
#   measures the round trip tensor by tensor). An artefact of the base, and a reminder to know where a model's
#   "float" weights came from before ranking formats on it.

# %%
def gap_closed(method, label):
    """The share of RTN's perplexity increase that ``method`` removes at the same format and group."""
    rtn_row, method_row = by_label[f"RTN {label}"], by_label[f"{method} {label}"]
    return (rtn_row["ppl"] - method_row["ppl"]) / (rtn_row["ppl"] - float_point["ppl"])


def apart(better, worse):
    """True if ``better``'s change from float is lower than ``worse``'s by more than two standard errors of
    their difference (taken as independent, which is cautious: they are measured on the same tokens)."""
    return worse["delta_pct"] - better["delta_pct"] > 2 * np.hypot(better["delta_pct_stderr"],
                                                                  worse["delta_pct_stderr"])


for label in ("INT4 g64", "INT3 g64"):
    print(f"{label}: RTN {qt.notebook.percent(by_label['RTN ' + label]['delta_pct'])};  "
          + ";  ".join(f"{method} {qt.notebook.percent(by_label[method + ' ' + label]['delta_pct'])}, "
                       f"{gap_closed(method, label):.0%} of RTN's gap closed" for method in ("GPTQ", "AWQ")))

# %% tags=["nbval-check-output"]
claim("8 bits cost under 1 %: INT8 per channel and Q8_0",
      by_label["INT8 per-channel"]["delta_pct"] < 1 and by_label["Q8_0"]["delta_pct"] < 1)
claim("RTN INT4 in groups of 64 costs more than 10 %, and per row more than twice that",
      by_label["INT4 g64 asym"]["delta_pct"] > 10
      and by_label["INT4 per-channel"]["delta_pct"] > 2 * by_label["INT4 g64 asym"]["delta_pct"])
claim("GPTQ and AWQ each close at least a third of RTN's gap at INT4 g64 and at INT3 g64, outside the noise",
      all(gap_closed(m, label) > 1 / 3 and apart(by_label[f"{m} {label}"], by_label[f"RTN {label}"])
          for m in ("GPTQ", "AWQ") for label in ("INT4 g64", "INT3 g64")))
claim("Q4_K_M costs less than a third of what RTN INT4 g64 costs",
      by_label["Q4_K_M"]["delta_pct"] < by_label["INT4 g64 asym"]["delta_pct"] / 3)
claim("on this Q4_1-based model Q5_K_M loses more than Q4_K_M, outside the noise",
      apart(by_label["Q4_K_M"], by_label["Q5_K_M"]))

# %% [markdown]
# The lower-left edge of the plot, the Pareto front, is where to shop: no variant on it is beaten on both size and
# perplexity by another. (Broken models are left out: the smallest of them would otherwise "win" on size.)

# %%
working = [row for row in shown if row["ppl"] < 10 * float_point["ppl"]]  # INT2 and per-tensor INT4 are broken
front = figures.pareto_front(working)
print("Pareto front of the working variants (no other is both smaller and better):",
      ", ".join(row["label"] for row in front))

# %% [markdown]
# ## Are these still this library's numbers?
#
# A table that ships as data could go stale while the code moves on. Three of its rows, measured again now on the
# first 1024 of the same test tokens (ctx 512, stride 256): the change from float should agree with the table's
# within the noise of both measurements (the first 1024 tokens are part of the table's, so the two are not
# independent and the test is, if anything, generous).

# %%
window = dict(ctx=512, stride=256, max_tokens=1024, progress=False)
live_float = score(smol, smol_tok, **window)
live = {label: evaluate(smol, smol_tok, method, fmt, group, sym, baseline=live_float, **window)
        for label, method, fmt, group, sym in (("INT4 g64 asym", "rtn", "int4", 64, False),
                                               ("INT3 g64", "rtn", "int3", 64, False),
                                               ("Q4_K_M", "gguf", "Q4_K_M", None, None))}
agree = {}
for label, point in live.items():
    stored = by_label[label]
    both = np.hypot(point["delta_pct_stderr"], stored["delta_pct_stderr"])
    agree[label] = abs(point["delta_pct"] - stored["delta_pct"]) < 2 * both
    print(f"{label:14s} now {qt.notebook.percent(point['delta_pct'])} +- {point['delta_pct_stderr']:.1f} on 1024 tokens,"
          f"  table {qt.notebook.percent(stored['delta_pct'])} +- {stored['delta_pct_stderr']:.1f} on {stored['tokens']}")

# %% tags=["nbval-check-output"]
claim("each re-measured change from float agrees with the table's within two standard errors of their difference",
      all(agree.values()))

# %% [markdown]
# ## Calibration mismatch
#
# GPTQ fits each layer to its calibration inputs; AWQ only takes their mean magnitude per channel. What if the
# calibration text is news and the model will read Wikipedia, or the other way round? One layer answers it in a
# few seconds: `gate_proj` of block 10 (576 inputs), INT3 g64, quantized by each method from 32 windows of 256
# tokens of either text, and its output error measured on 1024 tokens of each text that neither calibration saw
# (the wiki test split; news tokens after the first 60,000, from which the news windows are cut). Each error is
# divided by plain rounding's on the same tokens: below 1, the method helps.

# %%
layer = "model.layers.10.mlp.gate_proj"
news = qt.data.tokens("news", smol_tok)
CUT = 60_000  # news calibration windows come from before this token, news evaluation tokens from after it
starts = np.random.default_rng(0).integers(0, CUT - 256, size=32)
calibration_text = {"wiki": qt.data.calibration(32, 256, tokenizer=smol_tok),
                    "news": np.stack([news[start:start + 256] for start in starts])}
evaluation_text = {"wiki test": qt.data.tokens("test", smol_tok)[:1024].reshape(4, 256),
                   "news": news[CUT:CUT + 1024].reshape(4, 256)}


def inputs_of(windows):
    """The layer's inputs on these windows (tokens x 576); each forward pass stops after the layer."""
    calls = qt.model.capture_calls(smol, windows, [layer], stop_after=layer)[layer]
    return np.concatenate([args[0].reshape(-1, args[0].shape[-1]).numpy() for args, _, _ in calls])


X_calib = {source: inputs_of(windows) for source, windows in calibration_text.items()}
X_eval = {text: inputs_of(windows) for text, windows in evaluation_text.items()}
W = qt.model.get_weight(qt.model.find_layer(smol, layer))
int3 = qt.formats.get("int3")
W_rounded = rtn.quantize(W, int3, 64).dequantize()
methods = {"GPTQ": lambda X: gptq.quantize(W, int3, 64, calib=X, act_order=True),
           "AWQ": lambda X: awq.quantize(W, int3, 64, calib=X, name=layer,
                                              role=qt.model.role_of(layer))}
mismatch = {}
for method, run in methods.items():
    print(f"{method} INT3 g64, error / RTN's     on wiki test   on news")
    for source, X in X_calib.items():
        W_hat = run(X).dequantize()
        for text, X_text in X_eval.items():
            mismatch[method, source, text] = (relative_output_error(W, W_hat, X_text)
                                              / relative_output_error(W, W_rounded, X_text))
        print(f"  calibrated on {source:4s}              {mismatch[method, source, 'wiki test']:11.2f}"
              f"   {mismatch[method, source, 'news']:7.2f}")

# %% tags=["nbval-check-output"]
for text, own in (("wiki test", "wiki"), ("news", "news")):
    other = "news" if own == "wiki" else "wiki"
    claim(f"GPTQ on {text} text: calibrating on the same kind of text leaves a tenth less error or better",
          mismatch["GPTQ", own, text] < 0.9 * mismatch["GPTQ", other, text])
claim("AWQ: the calibration text changes its error by less than 5 % on either evaluation text",
      all(abs(mismatch["AWQ", "wiki", text] / mismatch["AWQ", "news", text] - 1) < 0.05 for text in X_eval))

# %% [markdown]
# Read the tables by columns: each column is one evaluation text, and the question is whether the row that
# matches it is the lower one. For GPTQ it is, clearly: its error on a text depends on which text it was fitted
# to, because its weight updates cancel errors along the directions its calibration inputs take. AWQ's scales
# come from mean magnitudes per channel, which barely move between the two texts, so its error does not care
# where the calibration came from — and on its own text GPTQ beats it. This is the AWQ paper's argument
# (Lin et al., 2023, who measured GPTQ degrading more than AWQ when calibration and evaluation differ). The
# practical rule: calibrate on text like the text the model will serve (chat, code, another language), measure
# on that text too, and never on the evaluation text itself.

# %% [markdown]
# ## Error per layer, method against method
#
# Perplexity says how much a method helps; it does not say *where*. The map below has one cell per linear layer of
# SmolLM2 (30 blocks × 7 projections): its relative output error $\|XW^\top - X\hat W^\top\|^2 / \|XW^\top\|^2$
# on inputs from the test split that no calibration saw, under RTN, GPTQ or AWQ. Each layer is quantized on its
# own from the float model's inputs (16 windows of 256 wiki tokens), which makes it a map of the layers rather
# than a replay of the whole-model runs above (those quantize block after block on the inputs of the blocks
# already quantized); it was measured once by `python tools/layer_errors_smollm2.py` and ships as data, and the
# cell after the widget re-measures two of its layers live. Pick a format, a method, and **error / RTN's** to see
# where a method helps (blue) and where it does not (red).

# %%
layer_data = qt.zoo.layer_errors("smollm2")
layer_map = widgets.LayerErrorMap(layer_data, setting="INT3 g64", method="RTN")

# %% tags=["nbval-ignore-output"]
layer_map

# %%
for setting in layer_data["settings"]:
    for method in layer_data["methods"]:
        view = widgets.layer_error_summary(layer_data, setting, method, "error")
        helped = "" if view["helped"] is None else f"; below RTN on {view['helped']:.0%} of the layers"
        print(f"{setting} {method:4s}: worst " + ", ".join(f"{name} {value:.3g}" for name, value in view["worst"][:3])
              + helped)
state = widgets.layer_error_summary(layer_data, "INT3 g64", "RTN", "error")
fig = figures.layer_map(state["grid"], [f"block {b}" for b in range(30)], [p[:-5] for p in widgets.PROJECTIONS],
                        marked=state["cells"], colorbar_label="relative output error",
                        title="RTN INT3 g64: output error per layer (worst five outlined)")
plt.show()
state = widgets.layer_error_summary(layer_data, "INT3 g64", "GPTQ", "ratio")
fig = figures.layer_map(state["grid"], [f"block {b}" for b in range(30)], [p[:-5] for p in widgets.PROJECTIONS],
                        ratio=True, colorbar_label="GPTQ error / RTN error",
                        title="GPTQ INT3 g64: error divided by RTN's on the same layer (blue: better)")
plt.show()

# %% [markdown]
# Two layers measured again, now, the way the tool measured them: the same calibration windows and held-out
# tokens, the float model's inputs.

# %%
check_layers = ["model.layers.3.self_attn.v_proj", "model.layers.20.mlp.down_proj"]
calib_16 = qt.data.calibration(16, 256, tokenizer=smol_tok)
held_out = qt.data.tokens("test", smol_tok)[:1024].reshape(4, 256)
X_fit = qt.model.capture_inputs(smol, calib_16, check_layers)
X_held = qt.model.capture_inputs(smol, held_out, check_layers)
live_errors = {}
for name in check_layers:
    W_layer = qt.model.get_weight(qt.model.find_layer(smol, name))
    for method, run in (("RTN", lambda: rtn.quantize(W_layer, int3, 64)),
                        ("GPTQ", lambda: gptq.quantize(W_layer, int3, 64, calib=X_fit[name], act_order=True))):
        live_errors[method, name] = relative_output_error(W_layer, run().dequantize(), X_held[name])
        stored = layer_data["errors"]["INT3 g64"][method][name]
        print(f"{method:4s} {name:34s} now {live_errors[method, name]:.5f}   stored {stored:.5f}")

# %% tags=["nbval-check-output"]
claim("each re-measured layer error is within 2 % of the stored one",
      all(abs(live_errors[method, name] / layer_data["errors"]["INT3 g64"][method][name] - 1) < 0.02
          for method, name in live_errors))
int3_errors = layer_data["errors"]["INT3 g64"]
rtn_worst = sorted(int3_errors["RTN"], key=lambda name: -int3_errors["RTN"][name])[:15]
gptq_ratio = widgets.layer_error_summary(layer_data, "INT3 g64", "GPTQ", "ratio")["grid"]
median_by_projection = dict(zip(widgets.PROJECTIONS, np.median(gptq_ratio, axis=0)))
claim("RTN INT3 g64: at least 12 of the 15 largest layer errors are value projections",
      sum(name.endswith("v_proj") for name in rtn_worst) >= 12)
claim("GPTQ lowers the error of over 80 % of the layers, and of q/k/v by more than half (median over blocks)",
      widgets.layer_error_summary(layer_data, "INT3 g64", "GPTQ", "error")["helped"] > 0.8
      and all(median_by_projection[p] < 0.5 for p in ("q_proj", "k_proj", "v_proj")))
claim("but GPTQ does not help down_proj on held-out text: its median error ratio to RTN is above 0.9",
      median_by_projection["down_proj"] > 0.9)
claim("AWQ lowers the error of over 95 % of the layers",
      widgets.layer_error_summary(layer_data, "INT3 g64", "AWQ", "error")["helped"] > 0.95)

# %% [markdown]
# What the map shows:
#
# * **RTN hurts the value projections most**, in nearly every block (notebook 04 found the same at INT3 per
#   channel); `v_proj` is also the smallest layer of a block (192 outputs: 3 key/value heads of 64).
# * **GPTQ cuts the error of q/k/v by 60–70 %** and of the MLP's gate/up by about 40 %, **but not
#   `down_proj`'s**: with 1536 inputs, 16 windows of 256 tokens fit a Hessian the held-out text does not share,
#   and GPTQ's updates cancel errors that only the calibration text had (notebook 06 measures how more
#   calibration text closes this). On the calibration inputs themselves GPTQ would look better than it is:
#   measure on text it was not fitted to.
# * **AWQ helps every layer**, by less than GPTQ where GPTQ works and more where it does not (`down_proj`): its
#   scales need only each channel's mean magnitude, which 16 windows estimate well (the calibration-mismatch
#   result above, layer by layer).

# %% [markdown]
# ## Is a difference worth worrying about? The "+0.5–1 point" rule against the noise
#
# Practitioners' rule of thumb: a quantized model within **+0.5–1 perplexity point** of its float original is
# acceptable. Two things decide what that rule means on a given model and text, and both can be measured here.
#
# * **Points are not percent.** Llama-2-7B scores about 5.5 on WikiText-2; there one point is +18 %. SmolLM2 scores
#   25.7 on this slice; one point is +4 %. The rule is a percentage in disguise, and a different one per model.
# * **The noise decides what can be told apart.** A perplexity measured on a few thousand tokens has a standard
#   error (the ± above, from the per-token losses, as llama.cpp's `perplexity` prints it). Two perplexities on
#   *different* text can only be compared within that ±; a quantized model and its float original on the *same*
#   tokens share most of their ups and downs, and the standard error of their difference (the paired ± of the
#   change column) is far smaller.

# %%
one_point_pct = 100 / float_point["ppl"]
unpaired_pct = 100 * float_point["ppl_stderr"] / float_point["ppl"]
paired = {label: by_label[label] for label in ("INT8 per-channel", "Q8_0", "Q6_K", "Q4_K_M", "INT4 g64 asym")}
print(f"float {float_point['ppl']:.2f} +- {float_point['ppl_stderr']:.2f} on {by_label['Q8_0']['tokens']} tokens: "
      f"one point is {one_point_pct:.1f} %, half a point {one_point_pct / 2:.1f} %;"
      f" one standard error of the perplexity itself is {unpaired_pct:.1f} %")
for label, row in paired.items():
    points = row["ppl"] - float_point["ppl"]
    verdict = "within 0.5 point" if points <= 0.5 else "within 1 point" if points <= 1 else "over 1 point"
    print(f"  {label:18s} {points:+6.2f} points = {qt.notebook.percent(row['delta_pct'])} +- "
          f"{row['delta_pct_stderr']:.2f} (paired): {verdict}")

# %% tags=["nbval-check-output"]
claim("on this slice one perplexity point is between 2 and 8 % of SmolLM2's perplexity, and the standard error of "
      "one perplexity is larger than half a point", 2 < one_point_pct < 8 and float_point["ppl_stderr"] > 0.5)
claim("paired standard errors of the change are at least four times smaller than one perplexity's own, for the "
      "8-bit rows and Q4_K_M",
      all(4 * paired[label]["delta_pct_stderr"] < unpaired_pct for label in ("INT8 per-channel", "Q8_0", "Q4_K_M")))

# %% [markdown]
# So on SmolLM2 the rule reads "within 2–4 %", and the paired ± says which rows pass it for certain. Had the
# quantized model been scored on other text than the float one, a one-point difference would hide inside the
# ± of either measurement: compare on the same tokens, always, and report the ± of the difference.
#
# ## The decision rule
#
# `qtutor.eval.advisor.recommend` asks the questions in a practitioner's order: *where will it run* (the hardware
# decides which formats have fast kernels), *does it fit* (most bits first; the first candidate within the memory
# wins), *is it good enough* (the typical loss of that bit-width on 7B–70B models against your tolerance), and *is
# there calibration data* (GPTQ, AWQ or an importance matrix below 5 bits; rounding with small groups without).
# Fine-tuning is its own branch (QLoRA: adapters on frozen NF4 weights, bitsandbytes' format); a loss beyond your
# tolerance points to a smaller model at more bits or to quantization-aware training. Its docstring states the
# rule in full.
#
# **Does it fit** counts what a running model holds, not just its weights: the weights in the format, 10 % for
# activations and the runtime, the **KV cache** at your context length, and the memory the **system keeps** (the
# operating system, a browser: about 2 GB on a laptop). For an 8B model (Llama 3.1 8B's shape: 32 layers, 8
# key/value heads of 128 channels) on an 8 GB laptop at 4,096 tokens:

# %% tags=["nbval-check-output"]
laptop = advisor.recommend(8e9, memory_gb=8, hardware="cpu", context=4096)
layers, kv_heads, head_dim = advisor.typical_architecture(8e9)
print(f"KV cache: 2 x {layers} layers x {kv_heads} heads x {head_dim} channels x 4096 tokens x 2 bytes = "
      f"{laptop.kv_cache_gb:.2f} GB;  free for the model: 8 - {laptop.headroom_gb:g} = {laptop.usable_gb:g} GB")
for row in laptop.considered:
    print(f"  {row['label']:18s} 8e9 x {row['bits_per_weight']:6.3f} / 8 x 1.1 + {laptop.kv_cache_gb:.2f} = "
          f"{row['gb']:5.2f} GB  {'fits' if row['fits'] else 'does not fit'}")
print("choice:", laptop.choice.label)

# %% [markdown]
# Q6_K's 7.2 GB of weights would fit the bare 8 GB, which is what a rule counting weights alone would pick; with
# the system's share and the cache counted, Q4_K_M is the largest mix that runs, the answer local-LLM guides give
# for this laptop.
#
# Move the controls: the bars are the memory each candidate needs (grey: its KV cache), the dotted line the
# machine's memory, the dashed line what the system leaves free, the red bar the choice; the line above the chart
# says what SmolLM2 measured for the same method and format (above).

# %% tags=["nbval-ignore-output"]
widgets.MethodAdvisor(rows, hardware="cpu", size="8B", memory_gb=8, measured_on="SmolLM2-135M")

# %% [markdown]
# The same rule for common situations (memory in GB, 4,096 tokens of context; the rule depends on no
# measurement, so these lines are checked when the notebook is tested):

# %% tags=["nbval-check-output"]
situations = [("8B on an 8 GB laptop", 8e9, 8, "cpu", True), ("8B on a 16 GB laptop", 8e9, 16, "cpu", True),
              ("8B on an 8 GB laptop, no data", 8e9, 8, "cpu", False),
              ("70B on one 80 GB H100", 70e9, 80, "hopper", True), ("70B on a 48 GB A6000", 70e9, 48, "ampere", True),
              ("32B on a 32 GB RTX 5090", 32e9, 32, "blackwell", True),
              ("fine-tune 8B on a 24 GB GPU", 8e9, 24, "hopper", True),
              ("fine-tune 32B on a 24 GB GPU", 32e9, 24, "hopper", True)]
for title, parameters, memory, hardware, has_data in situations:
    advice = advisor.recommend(parameters, memory, hardware, calibration=has_data, finetune=title.startswith("fine"))
    low, high = advice.expected_loss_pct
    expected = f"expected +{low:g} to +{high:g} %" if high else "no quantization loss"
    print(f"{title:30s} -> {advice.choice.label:44s} {advice.gb:5.1f} GB, {expected}")

# %% [markdown]
# ## What this table cannot tell you
#
# * **Speed.** Bits per weight set the memory and, for decoding, the memory traffic; whether a format is *fast*
#   depends on kernels for your hardware, which is why the rule asks for the hardware first.
# * **Scale.** SmolLM2 has 135 M parameters trained on trillions of tokens: every weight carries a lot, so rounding
#   costs it more than it costs a 7B–70B model at the same bits (the advisor's expected losses are those of the
#   larger models). The course's tiny model is the opposite extreme: small, but trained so briefly that rounding
#   barely moves it (notebook 04). Trust the orderings here more than the percentages.
# * **Tasks.** Perplexity is a proxy. Before shipping a quantized model, evaluate it on what it will do.

# %% [markdown]
# ## Exercises
#
# 1. **Shop on the front.** With a tolerance of 5 % on SmolLM2, which variant of the full table stores the fewest
#    bits per weight while its change from float stays below 5 % by two paired standard errors?
# 2. **Your own laptop.** Ask the advisor for a 14B model on a 16 GB laptop at 8,192 tokens of context. Work the
#    memory out by hand first, as in the 8 GB example above, then check.
# 3. **Long context.** At what context length (a power of two from 4,096 up) does an 8B model on a 16 GB laptop
#    lose Q8_0, and at what length does nothing fit any more?

# %% tags=["solution", "nbval-check-output"]
# 1. the rows whose change is below 5 % with two standard errors to spare, fewest bits first
safe = [row for row in rows if row["delta_pct"] + 2 * row["delta_pct_stderr"] < 5]
best = min(safe, key=lambda row: row["bits_per_weight"])
print("below 5 % for certain:", ", ".join(sorted(row["label"] for row in safe)))
claim("on SmolLM2 every variant below 5 % for certain stores 8 bits per weight or more (Q6_K included: its "
      "576-wide tensors fall back to Q8_0)", all(row["bits_per_weight"] >= 8 for row in safe))

# %% tags=["solution"]
print(f"the fewest bits below 5 %: {best['label']} at {best['bits_per_weight']:.2f} bits per weight "
      f"({qt.notebook.percent(best['delta_pct'])} +- {best['delta_pct_stderr']:.1f})")

# %% tags=["solution", "nbval-check-output"]
# 2. 14B: 48 layers x 8 KV heads x 128 channels; cache = 2 x 48 x 8 x 128 x 8192 x 2 bytes = 1.61 GB, 14 GB free
fourteen = advisor.recommend(14e9, memory_gb=16, hardware="cpu", context=8192)
for row in fourteen.considered:
    print(f"  {row['label']:18s} {row['gb']:5.2f} GB  {'fits' if row['fits'] else 'does not fit'}")
print("choice:", fourteen.choice.label)

# %% tags=["solution", "nbval-check-output"]
# 3. the cache grows by 0.13 GB per 1,000 tokens (2 x 32 x 8 x 128 x 2 bytes = 131 kB a token)
for context in (4096, 8192, 16384, 32768, 65536, 131072):
    advice = advisor.recommend(8e9, memory_gb=16, hardware="cpu", context=context)
    label = advice.choice.label if advice.choice else "nothing fits"
    print(f"{context:7,d} tokens: KV cache {advice.kv_cache_gb:5.2f} GB -> {label}")
