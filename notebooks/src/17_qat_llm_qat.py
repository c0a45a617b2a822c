# %% [markdown]
# # 17 · Quantization-aware training: the STE, LSQ and LLM-QAT
#
# Everything before this notebook — RTN, GPTQ, AWQ, the GGUF mixes — is **post-training quantization** (PTQ): the
# weights are trained in float and rounded afterwards, with at most a few hundred calibration sequences and no
# gradient step. **Quantization-aware training** (QAT) rounds the weights in *every forward pass of training*, so
# the loss sees the quantized model and the gradient moves the float weights to where their rounding hurts least.
# Google's Gemma 3 QAT checkpoints, Meta's quantized Llama 3.2 and torchao's `QATConfig(step="prepare")` /
# `QATConfig(step="convert")` are this.
#
# | | PTQ (RTN, GPTQ, AWQ, ...) | QAT |
# |---|---|---|
# | data | none, or ~100 calibration sequences | a training set (or text the model writes itself: LLM-QAT) |
# | compute | seconds to minutes | a training run: forward *and* backward, thousands of steps |
# | what changes | the rounding of fixed weights (GPTQ also updates the weights left of each column) | every weight, the scales, through the loss |
# | where it pays | 4 bits and up | 3 bits and below, where PTQ breaks |
#
# The QLoRA of notebook 9 also trains beside quantized weights, but keeps them frozen; here the quantized weights
# themselves learn.

# %%
import copy

import numpy as np
import matplotlib.pyplot as plt
import torch
import qtutor as qt
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.training import llm_qat, qat
from qtutor.training.loop import train
from qtutor.viz import figures, widgets

qt.setup_notebook(seed=0)
claim = qt.notebook.claim
tiny, tiny_tok = qt.load_model("tiny")
stored = qt.zoo.training("smollm2")
card = qt.zoo.measurements("smollm2")

# %% [markdown]
# ## Rounding has no gradient: the straight-through estimator
#
# A fake-quantized weight is $\hat w = s\,(\text{clamp}(\text{round}(w/s) + z, 0, q_{\max}) - z)$. Its derivative
# with respect to $w$ is zero almost everywhere (the staircase is flat) and undefined at every half-step, so
# backpropagation through it would stop dead. The **straight-through estimator** (STE; Bengio, Léonard and
# Courville 2013) uses the rounding in the forward pass and pretends it was the identity in the backward pass:
#
# $$\text{round}_{\text{STE}}(x) = x + \text{stopgrad}(\text{round}(x) - x), \qquad
#   \frac{\partial \hat w}{\partial w} = \begin{cases} 1 & \text{inside } [0, q_{\max}] \\ 0 & \text{where the clamp cut} \end{cases}$$
#
# In code, `stopgrad` is `.detach()`: `qat.round_ste`.

# %%
figures.ste_rounding(q_max=7, title="INT3's codes 0 ... 7: the forward staircase, and the gradient the STE passes")
plt.show()

# %% tags=["nbval-check-output"]
x = torch.tensor([-1.3, 0.2, 2.5, 3.49, 6.6, 8.4], requires_grad=True)
codes = torch.clamp(qat.round_ste(x), 0, 7)
codes.sum().backward()
print("x          ", x.detach().numpy())
print("code       ", codes.detach().numpy(), "(round half to even: 2.5 -> 2)")
print("d code / dx", x.grad.numpy(), "(1 inside the range, 0 where the clamp cut)")

# %% [markdown]
# ## Learning the step: LSQ
#
# With the STE the weights train, but the step $s$ of each group is still RTN's, set by the group's extremes.
# **LSQ** (Esser et al. 2020, arXiv:1902.08153) makes $s$ a parameter too, started at RTN's (so step 0 *is* RTN),
# with the gradient the STE implies, for $v = w/s$:
#
# $$\frac{\partial \hat w}{\partial s} = \begin{cases} \text{round}(v) - v & \text{inside the range} \\
#   q_{\min}\ \text{or}\ q_{\max} & \text{where the code was clamped} \end{cases}
#   \qquad \text{times } g = \frac{1}{\sqrt{n\, q_{\max}}}$$
#
# ($n$ weights share the step; $g$ keeps the step's updates in proportion to the weights'.) A learned step may
# shrink below RTN's and **clip** the largest weights, in exchange for finer steps for all the others — what
# GPTQ's and AWQ's clip searches do by hand. On one layer of the tiny model, with its weights frozen and only the
# per-channel INT3 steps learned to minimise the layer's output error on real inputs (`qat.learn_steps`):

# %%
layer_name = "model.layers.1.mlp.down_proj"
calib = qt.data.calibration(16, 256)
inputs = qt.model.capture_inputs(tiny, calib[:8], [layer_name])[layer_name]
W = tiny.get_submodule(layer_name).weight.detach().numpy()
learned = qat.learn_steps(W, inputs, "int3", group_size=-1, steps=150, lr=1e-3)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
axes[0].plot(np.array(learned["losses"]) / learned["rtn_error"], color="C0")
axes[0].set_xlabel("LSQ step")
axes[0].set_ylabel("output error / RTN's")
axes[0].set_title(f"{layer_name}, INT3 per channel: only the steps train")
axes[1].hist(learned["scale_ratio"], bins=40, color="C0")
axes[1].axvline(1.0, color="0.3", linestyle="--")
axes[1].set_xlabel("learned step / RTN's step, per output channel")
axes[1].set_title("most steps shrink: the largest weights get clipped")
plt.show()

# %% tags=["nbval-check-output"]
claim("learning the steps lowers the layer's output error by more than a tenth from RTN's, and most learned steps "
      "are smaller than RTN's (they clip)",
      learned["lsq_error"] < 0.9 * learned["rtn_error"] and np.median(learned["scale_ratio"]) < 1)

# %% [markdown]
# ## QAT on the tiny model, beside RTN and GPTQ
#
# `qat.prepare(model, fmt, 64, step="lsq")` puts a fake-quantizing `QATLinear` in place of every linear but the
# output head; the model then trains as usual (`qtutor.training.loop.train`: AdamW on next-token cross-entropy,
# 8 windows of 256 wiki training tokens a step) and `qat.convert` turns each layer back into a plain linear
# holding its quantized weights — the same codes and float16 scales PTQ would store, so the converted model is
# what ships. A trap when reading such numbers: the tiny model was trained briefly, so *any* further training
# improves it. The float model trained for the same steps is the fair reference, so it is measured too.

# %%
WINDOW = dict(ctx=256, stride=128, max_tokens=4096)
QAT_STEPS = 20
train_tokens = qt.data.tokens("train", tiny_tok)
float_score = score(tiny, tiny_tok, progress=False, **WINDOW)
control, _ = qt.load_model("tiny")
train(control, train_tokens, steps=QAT_STEPS, lr=1e-4, progress=False)
trained_float = score(control, tiny_tok, progress=False, **WINDOW).compare(float_score)
rows = {}
for fmt in ("int3", "int2"):  # INT4 left out: RTN already costs the tiny model about 0.2 % there (notebook 04)
    rows[fmt] = {method: evaluate(tiny, tiny_tok, method, fmt, 64, calib=calib if method == "gptq" else None,
                                  baseline=float_score, **WINDOW) for method in ("rtn", "gptq")}
    student, _ = qt.load_model("tiny")
    qat.prepare(student, fmt, 64, step="lsq")
    train(student, train_tokens, steps=QAT_STEPS, lr=1e-4, progress=False)
    qat.convert(student)
    rows[fmt]["qat"] = score(student, tiny_tok, progress=False, **WINDOW).compare(float_score)
print(f"float perplexity {float_score.ppl:.2f}; the float model trained {QAT_STEPS} more steps: "
      f"{trained_float['delta_pct']:+.2f} % ± {trained_float['delta_pct_stderr']:.2f}")
print(f"{'':6s}" + "".join(f"{name:>20s}" for name in ("RTN g64", "GPTQ g64", f"QAT {QAT_STEPS} steps")))
for fmt, row in rows.items():
    print(f"{fmt:6s}" + "".join(f"{row[m]['delta_pct']:+12.2f} ± {row[m]['delta_pct_stderr']:4.2f}"
                                for m in ("rtn", "gptq", "qat")))

# %% tags=["nbval-check-output"]
int2 = rows["int2"]
claim("at INT2, QAT ends below RTN by more than twice their combined standard errors",
      int2["rtn"]["delta_pct"] - int2["qat"]["delta_pct"]
      > 2 * np.hypot(int2["rtn"]["delta_pct_stderr"], int2["qat"]["delta_pct_stderr"]))
claim("at INT3 and INT2, this short QAT run and GPTQ end within twice their combined standard errors of each "
      "other: on the tiny model neither separates from the other",
      all(abs(rows[fmt]["qat"]["delta_pct"] - rows[fmt]["gptq"]["delta_pct"])
          < 2 * np.hypot(rows[fmt]["qat"]["delta_pct_stderr"], rows[fmt]["gptq"]["delta_pct_stderr"])
          for fmt in ("int3", "int2")))

# %% [markdown]
# Read the table honestly (INT4 is not in it: RTN already costs the tiny model about 0.2 % there, and every
# training run costs this notebook time). QAT clearly repairs INT2 against RTN. Against GPTQ (with its 16 calibration windows)
# the tiny model cannot decide: its weights are so insensitive that every INT3 row is within about a percent of
# float, and a 20-step run (about 40,000 tokens) is a very short training. The float model's own row is the
# trap to avoid: it moves too, because the tiny model was trained briefly and *any* further training changes it.
# Real models are where QAT earns its cost — next.
#
# ## QAT on SmolLM2 at INT3 and INT2
#
# SmolLM2 loses 212 % of its perplexity to RTN at INT3 in groups of 64, and at INT2 it breaks completely. The
# stored runs (`python tools/training_smollm2.py --part qat`) start LSQ from RTN's steps and train 30 steps of 4
# windows of 256 wiki tokens (30,720 tokens — a blink next to a real QAT run) at lr 5·10⁻⁵:

# %%
qat_part = stored["qat"]
float_ppl = stored["float"]["ppl"]
gptq_int3 = next(row for row in card["calibrated"] if row["label"] == "GPTQ INT3 g64")
print(f"{qat_part['command']}: {qat_part['seconds']} s on {qat_part['machine']}")
print(f"float perplexity {float_ppl:.2f} ({stored['float']['tokens']} test tokens, ctx {stored['float']['ctx']})")
print(f"GPTQ INT3 g64 (model card, 128 calibration windows): {gptq_int3['ppl']:.1f} "
      f"({gptq_int3['delta_pct']:+.1f} % ± {gptq_int3['delta_pct_stderr']:.1f})")
for key, run in qat_part.items():
    if not isinstance(run, dict) or "qat" not in run:
        continue
    print(f"\n{key}: RTN {run['rtn']['ppl']:,.1f} ({run['rtn']['delta_pct']:+,.1f} %), KL {run['rtn']['kl']:.3f}")
    for row in run["qat"]["checkpoints"]:
        print(f"  QAT step {row['step']:2d}: perplexity {row['ppl']:10,.1f} ± {row['ppl_stderr']:8,.1f} "
              f"({row['delta_pct']:+11,.1f} % ± {row['delta_pct_stderr']:7,.1f}), KL {row['kl']:.3f}, "
              f"same top token {row['same_top_pct']:.1f} %")

# %% tags=["nbval-check-output"]
int3_run, int2_run = qat_part["int3_g64"], qat_part["int2_g64"]
int3_end, int2_end = int3_run["qat"]["checkpoints"][-1], int2_run["qat"]["checkpoints"][-1]
claim("30 QAT steps at INT3 g64 recover over half of RTN's perplexity loss and end below GPTQ's, by more than "
      "twice their combined standard errors",
      int3_end["delta_pct"] < 0.5 * int3_run["rtn"]["delta_pct"]
      and gptq_int3["delta_pct"] - int3_end["delta_pct"] > 2 * np.hypot(gptq_int3["delta_pct_stderr"],
                                                                         int3_end["delta_pct_stderr"]))
claim("at INT2 g64 the same 30 steps divide the perplexity by over 100, yet leave it over 100 times the float "
      "model's", int2_run["rtn"]["ppl"] > 100 * int2_end["ppl"] and int2_end["ppl"] > 100 * float_ppl)

# %% [markdown]
# At INT3, thirty steps — 30,720 tokens, six minutes on two cores — take SmolLM2 from RTN's +212 % to +73 %,
# well below GPTQ's +117 %: on a sensitive model, training through the rounding beats the best one-shot method
# after a few dozen steps. Its KL to the float model falls less (from 1.31 to 0.81): the run fixes the likely
# tokens first. At INT2 the same steps take perplexity from about 570,000 to about 4,700 — a hundredfold, and still
# useless. That is what **ParetoQ** (Liu et al. 2025, arXiv:2502.02631) describes: at 3 bits and above QAT
# stays near the weights it started from and compensates for the rounding, while at 2 bits and below the model
# must learn a different representation, which takes far more training (ParetoQ spends billions of tokens on it).
# Thirty steps show the two regimes apart; they cannot show where INT2 would end.
#
# The replay below steps through the stored checkpoints: the loss, the perplexity so far against RTN, GPTQ and
# float, and the weights of one layer in units of their step ($w/s + z$): nothing trains on the slider.

# %%
replay_runs = {"INT3 g64": int3_run["qat"], "INT2 g64": int2_run["qat"]}
baselines = {"INT3 g64": {"RTN": int3_run["rtn"]["ppl"], "GPTQ (model card)": gptq_int3["ppl"], "float": float_ppl},
             "INT2 g64": {"float": float_ppl}}
replay = widgets.TrainingReplay(replay_runs, baselines=baselines, run="INT3 g64",
                                checkpoint=len(int3_run["qat"]["checkpoints"]) - 1)

# %% tags=["nbval-ignore-output"]
replay

# %%
last = len(int3_run["qat"]["checkpoints"]) - 1
figures.training_replay(int3_run["qat"]["losses"], int3_run["qat"]["checkpoints"], last,
                        int3_run["qat"]["histogram_bins"], baselines["INT3 g64"],
                        title="SmolLM2, QAT at INT3 g64: the stored run at its last checkpoint")
plt.show()

# %% [markdown]
# ## LLM-QAT: no training data, and the KV cache trained in
#
# QAT needs training text, and the pre-training text of most LLMs is not public. **LLM-QAT** (Liu et al. 2023,
# arXiv:2305.17888) lets the float model write it: start from a random token, decode the next 3–5 tokens greedily,
# then *sample* the rest from the model's own next-token distribution. The quantized student is then trained to
# match the float teacher's whole next-token distribution at every position (knowledge distillation, the KL
# divergence), not just the sampled token:
#
# $$\mathcal{L} = \frac{1}{N}\sum_i \text{KL}\big(p_{\text{teacher}}(\cdot \mid x_{<i}) \,\|\, p_{\text{student}}(\cdot \mid x_{<i})\big)$$
#
# The student quantizes more than its weights: per-channel symmetric MinMax weights, per-token activations, and
# the **KV cache** (the outputs of `k_proj` and `v_proj`, per token), all with the STE. The paper writes the
# setting as W-A-KV bits: 4-8-4 is where training the cache in pays most. The tiny model writes two sequences:

# %%
teacher = tiny
sequences = llm_qat.generate_data(teacher, 2, 40, seed=0, progress=False)
for row in sequences:
    print(repr(tiny_tok.decode(row.tolist())))

# %% [markdown]
# On SmolLM2, the stored runs (`python tools/training_smollm2.py --part llm_qat`) quantize W4-A8-KV4 and compare
# four students: no training (dynamic MinMax rounding: PTQ); distilled on 32 sequences SmolLM2 wrote itself;
# distilled on real wiki text, the same steps; and distilled on its own text with the cache left float in
# training and quantized only afterwards.

# %%
part = stored["llm_qat"]
print(f"{part['command']}: {part['seconds']} s; {part['steps']} steps of {part['batch']} x {part['seq_len']} tokens, "
      f"lr {part['lr']}; {part['sequences']} sequences generated in {part['generate_seconds']} s")
print(f"a generated sequence begins: {part['sample_text']!r}\n")
labels = {"ptq": "no training (PTQ)", "data_free": "data-free (its own text)", "real_text": "real wiki text",
          "data_free_kv_after": "data-free, cache quantized after"}
for key, label in labels.items():
    row = part[key]
    print(f"W{part['setting']} {label:34s} perplexity {row['ppl']:8.2f} ± {row['ppl_stderr']:5.2f} "
          f"({row['delta_pct']:+7.1f} % ± {row['delta_pct_stderr']:4.1f}), KL {row['kl']:.3f}")

# %% tags=["nbval-check-output"]
ptq, free, real, after = (part[key] for key in ("ptq", "data_free", "real_text", "data_free_kv_after"))
claim("data-free distillation cuts the PTQ student's perplexity loss by more than half",
      free["delta_pct"] < 0.5 * ptq["delta_pct"])
claim("and ends within a quarter of the loss that distillation on real text reaches in the same steps",
      free["delta_pct"] < 1.25 * real["delta_pct"])
claim("a KV cache quantized during training beats the same cache quantized only afterwards, in perplexity (by more "
      "than twice the two runs' combined standard errors) and in KL",
      after["delta_pct"] - free["delta_pct"] > 2 * np.hypot(after["delta_pct_stderr"], free["delta_pct_stderr"])
      and free["kl"] < after["kl"])

# %% [markdown]
# W4-A8-KV4 with MinMax rounding costs SmolLM2 +278 %: per-channel 4-bit weights (no groups), 8-bit inputs
# whose outliers set every token's scale (notebook 5), and a 4-bit cache. Twenty steps of distillation on text
# the model wrote itself — no training data at all — cut that to +134 %; the same steps on real wiki text reach
# +114 %. The self-written text is a little worse than the real thing, but it is free, and it carries what the
# model itself knows rather than what a fine-tuning set happens to cover. Training the cache quantizer in beats
# switching it on afterwards (+134 % against +153 %): the model learns keys and values that survive 4 bits. That
# is LLM-QAT's KV4 result, seen here on a model and a run a thousand times smaller than the paper's. (The
# comparison is between two runs on the same tokens; its uncertainty, taken unpaired, is the conservative one.)
#
# ## Exercises
#
# 1. Run `qat.learn_steps` on the same layer at INT2 per channel. Do the learned steps shrink more or less than
#    at INT3?
# 2. STE or LSQ? Train the tiny model at INT2 g64 with `step="ste"` (scales recomputed from the weights each step,
#    as RTN) for the same 20 steps and compare with LSQ's row above.
# 3. LLM-QAT on the tiny model: distill a W3-A8-KV4 student from the teacher on 24 sequences the teacher
#    writes itself, for 15 steps, and compare its perplexity with the untrained student's on 16,384 test tokens.
#    (At W4 the tiny model loses under half a percent, too little to see a repair in the noise.)

# %% tags=["solution"]
# 1. INT2: fewer levels, so clipping buys more
learned_int2 = qat.learn_steps(W, inputs, "int2", group_size=-1, steps=150, lr=1e-3)
print(f"median learned / RTN step: INT3 {np.median(learned['scale_ratio']):.2f}, "
      f"INT2 {np.median(learned_int2['scale_ratio']):.2f}")

# %% tags=["solution", "nbval-check-output"]
claim("at INT2 the steps shrink further than at INT3",
      np.median(learned_int2["scale_ratio"]) < np.median(learned["scale_ratio"]))

# %% tags=["solution"]
# 2. the plain STE with RTN's scales
ste_student, _ = qt.load_model("tiny")
qat.prepare(ste_student, "int2", 64, step="ste")
train(ste_student, train_tokens, steps=QAT_STEPS, lr=1e-4, progress=False)
qat.convert(ste_student)
ste = score(ste_student, tiny_tok, progress=False, **WINDOW).compare(float_score)
print(f"INT2 g64, {QAT_STEPS} steps: STE {ste['delta_pct']:+.2f} % ± {ste['delta_pct_stderr']:.2f}, "
      f"LSQ {rows['int2']['qat']['delta_pct']:+.2f} % ± {rows['int2']['qat']['delta_pct_stderr']:.2f}")

# %% tags=["solution"]
# 3. data-free distillation on the tiny model, W3-A8-KV4
TEST = dict(ctx=256, stride=256, tokens=qt.data.tokens("test", tiny_tok)[:16384], progress=False)
float_test = score(tiny, tiny_tok, **TEST)
untrained, _ = qt.load_model("tiny")
llm_qat.prepare(untrained, w_bits=3, a_bits=8, kv_bits=4)
before = score(untrained, tiny_tok, **TEST)
llm_qat.distill(untrained, teacher, llm_qat.generate_data(teacher, 24, 256, progress=False), steps=15, lr=1e-4,
                batch=8, seq_len=256, progress=False)
after = score(untrained, tiny_tok, **TEST)
gain = after.compare(before)
print(f"W3-A8-KV4 against float: untrained {before.compare(float_test)['delta_pct']:+.2f} %, "
      f"distilled {after.compare(float_test)['delta_pct']:+.2f} %; distilled against untrained "
      f"{gain['delta_pct']:+.2f} % ± {gain['delta_pct_stderr']:.2f} (paired)")

# %% tags=["solution", "nbval-check-output"]
claim("data-free distillation lowers the tiny student's perplexity by more than twice the paired standard error",
      gain["delta_pct"] < -2 * gain["delta_pct_stderr"])

# %% [markdown]
# ## What you learned
#
# * **PTQ** rounds trained weights; **QAT** trains through the rounding, with the **straight-through estimator**
#   passing the gradient through `round` as if it were the identity (and stopping it where the clamp cuts).
# * **LSQ** learns each group's step from the loss; learned steps shrink and clip the largest weights.
# * QAT's converted model holds the same kind of codes and float16 scales PTQ stores: `prepare`, train, `convert`.
# * On the tiny model a short QAT run beats RTN at INT2 but cannot be told apart from GPTQ; on SmolLM2, 30 QAT
#   steps at INT3 g64 beat GPTQ clearly.
#   INT2 breaks SmolLM2 so badly that 30 steps only start to repair it.
# * **LLM-QAT** trains without data, on text the float model writes itself, by distillation, and can train the
#   KV-cache quantizer in.
