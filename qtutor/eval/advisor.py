"""Choosing a method: a decision rule from (hardware, memory, tolerance, calibration data) to a method and format.

    advice = recommend(parameters=8e9, memory_gb=8, hardware="cpu", tolerance_pct=3, calibration=True)
    advice.choice.label, advice.gb, advice.reasons

The rule asks the questions a practitioner asks, in this order:

1. **Where will it run?** The hardware decides which formats have fast kernels, so it picks the candidates:
   a CPU or a Mac runs llama.cpp's GGUF mixes; an NVIDIA GPU runs INT4 weight-only (GPTQ, AWQ) everywhere, INT8
   W8A8 from Ampere on, FP8 from Hopper (sm_89/sm_90) on and NVFP4 / MXFP4 on Blackwell; fine-tuning on one GPU
   means QLoRA's NF4.
2. **Does it fit?** weights in the format + 10 % for activations and runtime + the KV cache at the user's context
   length must fit in the memory left after the operating system's headroom:

       weights x bits / 8 x 1.1  +  2 L H_kv d_head T x 2 bytes  <=  memory - headroom

   (``L`` layers, ``H_kv`` key/value heads of ``d_head`` channels, ``T`` tokens of context, an FP16 cache as
   llama.cpp and vLLM keep it by default; the architecture is a typical one of that size, ``ARCHITECTURES``).
   On an 8 GB laptop with 2 GB for the system, an 8B model at 4,096 tokens has 6 GB: Q6_K needs 7.8, Q5_K_M 6.8,
   Q4_K_M 5.9 -- the 4-bit mix every local-LLM guide recommends there. Candidates are tried from the most bits
   to the fewest; the first that fits wins, because with the same method fewer bits never cost less quality.
3. **Is it good enough?** The expected loss of the chosen bit-width is the typical range practitioners report
   (``TYPICAL_LOSS_PCT``: perplexity increase on 7B–70B models). When its low end already exceeds the tolerance,
   the advice says so: a smaller model at more bits is then usually the better trade, or, for whoever can
   train, quantization-aware training (QAT), which fine-tunes with the rounding in the loop and recovers much of
   what post-training quantization loses at the same bits.
4. **Is there calibration data?** At 4 bits and below a calibrated method (GPTQ, AWQ; an importance matrix for
   GGUF) recovers most of what rounding loses; without data the rule falls back to round-to-nearest with small
   groups (or NF4), which needs nothing but the weights.

Fine-tuning is its own branch: QLoRA trains small adapters on top of frozen NF4 weights, the format of
bitsandbytes, the library nearly everyone uses for it. Serving on an NVIDIA GPU at 4 bits means GPTQ or AWQ
checkpoints, which vLLM and TGI run with the same INT4 kernels (Marlin, ExLlama).

The rule is a teaching summary, not an oracle: next to each recommendation the course shows what the same
method and format measured on a real model (``evidence``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from qtutor.eval.footprint import bits_per_weight, kv_cache_bytes

GB = 1e9
RUNTIME_OVERHEAD = 0.10  # activations, buffers, the runtime itself: a fraction of the weights' bytes
DEFAULT_CONTEXT = 4096  # tokens of context the KV cache is sized for, unless the user says otherwise

# memory the rest of the machine keeps (GB): on a laptop the operating system, a browser and the desktop; on a
# GPU the CUDA context and the allocator's slack. Rules of thumb; pass headroom_gb= for your own machine.
HEADROOM_GB = {"cpu": 2.0, "apple": 2.0, "ampere": 1.0, "hopper": 1.0, "blackwell": 1.0}

# a typical architecture per size (layers, key/value heads, head dim) for the KV cache, from the public configs
# of Llama 3.2 1B / 3B, Llama 3.1 8B, Qwen2.5 14B / 32B and Llama 3.1 70B: all use grouped-query attention
# with 8 key/value heads
ARCHITECTURES = {1e9: (16, 8, 64), 3e9: (28, 8, 128), 8e9: (32, 8, 128), 14e9: (48, 8, 128),
                 32e9: (64, 8, 128), 70e9: (80, 8, 128)}

# perplexity increase (%) practitioners report on 7B-70B models, by bit-width and method class
# (8, 4 and 3 bits as the course's seeds state them; 6 and 5 bits lie between the 8- and 4-bit rows)
TYPICAL_LOSS_PCT = {
    "16-bit": (0.0, 0.0),
    "8-bit": (0.0, 0.5),
    "6-bit": (0.0, 1.0),
    "5-bit": (0.5, 2.0),
    "4-bit, calibrated": (1.0, 3.0),
    "4-bit, rounding": (3.0, 8.0),
    "3-bit": (5.0, 15.0),
    "2-bit": (15.0, 100.0),
}

HARDWARE = {
    "cpu": "CPU or laptop (llama.cpp)",
    "apple": "Apple silicon (llama.cpp, Metal)",
    "ampere": "NVIDIA Ampere: A100, RTX 30",
    "hopper": "NVIDIA Hopper / Ada: H100, L40, RTX 40",
    "blackwell": "NVIDIA Blackwell: B200, RTX 50",
}


@dataclass(frozen=True)
class Candidate:
    label: str
    method: str  # qtutor method name ("rtn", "gptq", "awq", "gguf", "smoothquant")
    fmt: str  # qtutor format or GGUF mix
    group_size: int | None  # None: the format's own blocks; -1: one scale per output channel
    loss_class: str  # key of TYPICAL_LOSS_PCT
    needs_calibration: bool = False
    note: str = ""

    @property
    def bits_per_weight(self) -> float:
        group = "default" if self.group_size is None else self.group_size
        return bits_per_weight(self.fmt, group)

    @property
    def evidence_key(self) -> tuple[str, str]:
        """(method, format) of the tiny-model measurement that stands beside this choice."""
        return self.method, self.fmt


def _gguf(mix: str, loss_class: str, calibrated: bool) -> Candidate:
    imatrix = calibrated and loss_class in ("4-bit, calibrated", "3-bit", "2-bit")
    return Candidate(mix + (" + imatrix" if imatrix else ""), "gguf", mix, None, loss_class, imatrix,
                     "llama.cpp; the importance matrix needs calibration text" if imatrix else "llama.cpp")


def _low_bit(bits: int, calibrated: bool) -> Candidate:
    fmt = f"int{bits}"
    loss = "3-bit" if bits == 3 else "2-bit" if bits == 2 else "4-bit, calibrated" if calibrated else "4-bit, rounding"
    if calibrated:
        return Candidate(f"GPTQ or AWQ {fmt.upper()} g128", "gptq", fmt, 128, loss, True,
                         "weight-only, calibrated; vLLM and TGI serve GPTQ and AWQ checkpoints with the same "
                         "INT4 kernels (Marlin, ExLlama)")
    return Candidate(f"RTN {fmt.upper()} g128", "rtn", fmt, 128, loss, False, "weight-only, no data needed")


def candidates(hardware: str, calibration: bool, finetune: bool = False) -> list[Candidate]:
    """The formats with fast kernels on ``hardware``, from the most bits to the fewest."""
    if hardware not in HARDWARE:
        raise ValueError(f"unknown hardware {hardware!r}: choose one of {', '.join(HARDWARE)}")
    if finetune:
        if hardware in ("cpu", "apple"):
            raise ValueError("fine-tuning a quantized model (QLoRA) needs an NVIDIA GPU here: choose a GPU, "
                             "or quantize after fine-tuning")
        return [Candidate("BF16 LoRA", "rtn", "bf16", None, "16-bit", False, "full-precision base"),
                Candidate("QLoRA: bitsandbytes NF4 + double quantization", "rtn", "nf4", 64, "4-bit, rounding",
                          False, "bitsandbytes' NF4; the adapters train in BF16 on top of frozen NF4 weights")]
    if hardware in ("cpu", "apple"):
        return [_gguf("Q8_0", "8-bit", calibration), _gguf("Q6_K", "6-bit", calibration),
                _gguf("Q5_K_M", "5-bit", calibration),
                _gguf("Q4_K_M", "4-bit, calibrated" if calibration else "4-bit, rounding", calibration),
                _gguf("Q3_K_M", "3-bit", calibration), _gguf("Q2_K", "2-bit", calibration)]
    eight = {"ampere": Candidate("SmoothQuant W8A8 INT8", "smoothquant", "int8", -1, "8-bit", True,
                                 "INT8 tensor cores; migrates activation outliers into the weights"),
             "hopper": Candidate("FP8 E4M3 W8A8", "rtn", "fp8_e4m3", -1, "8-bit", False,
                                 "FP8 tensor cores; per-channel scales, no calibration needed for weights"),
             "blackwell": Candidate("FP8 E4M3 W8A8", "rtn", "fp8_e4m3", -1, "8-bit", False, "FP8 tensor cores")}
    options = [Candidate("BF16", "rtn", "bf16", None, "16-bit", False, "no quantization"), eight[hardware]]
    if hardware == "blackwell":
        options.append(Candidate("NVFP4 W4A4", "rtn", "nvfp4", 16, "4-bit, calibrated", False,
                                 "FP4 tensor cores; 16-element blocks with an FP8 scale"))
    return options + [_low_bit(4, calibration), _low_bit(3, calibration), _low_bit(2, calibration)]


@dataclass
class Advice:
    choice: Candidate | None
    gb: float  # memory the choice needs, KV cache and overhead included
    memory_gb: float
    expected_loss_pct: tuple[float, float] | None
    within_tolerance: bool
    reasons: list[str] = field(default_factory=list)
    considered: list[dict] = field(default_factory=list)  # every candidate with its size and whether it fits
    headroom_gb: float = 0.0  # kept for the rest of the machine: the choice must fit memory_gb - headroom_gb
    kv_cache_gb: float = 0.0  # the KV cache at the context length, counted in gb

    @property
    def usable_gb(self) -> float:
        return self.memory_gb - self.headroom_gb


def typical_architecture(parameters: float) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of the ``ARCHITECTURES`` entry nearest in size (on a log scale)."""
    nearest = min(ARCHITECTURES, key=lambda size: abs(math.log(size / parameters)))
    return ARCHITECTURES[nearest]


def kv_cache_gb_at(parameters: float, context: int, architecture: tuple[int, int, int] | None = None) -> float:
    """GB of an FP16 KV cache for one sequence of ``context`` tokens: 2 L H_kv d_head T x 2 bytes."""
    layers, kv_heads, head_dim = architecture or typical_architecture(parameters)
    return kv_cache_bytes(context, n_layers=layers, n_kv_heads=kv_heads, head_dim=head_dim, bits=16) / GB


def needed_gb(parameters: float, candidate: Candidate, kv_cache_gb: float = 0.0) -> float:
    """GB to run ``parameters`` weights stored as ``candidate``: weights x (1 + overhead) + KV cache."""
    weights = parameters * candidate.bits_per_weight / 8
    return weights * (1 + RUNTIME_OVERHEAD) / GB + kv_cache_gb


def recommend(parameters: float, memory_gb: float, hardware: str = "cpu", tolerance_pct: float = 3.0,
              calibration: bool = True, finetune: bool = False, context: int = DEFAULT_CONTEXT,
              headroom_gb: float | None = None, kv_cache_gb: float | None = None) -> Advice:
    """The format with the most bits that fits ``memory_gb - headroom_gb`` on ``hardware`` with a KV cache of
    ``context`` tokens, and why (see the module's rule). ``headroom_gb`` defaults to ``HEADROOM_GB[hardware]``;
    ``kv_cache_gb`` overrides the cache computed from ``context`` and a typical architecture of that size."""
    if parameters <= 0 or memory_gb <= 0:
        raise ValueError(f"parameters ({parameters}) and memory_gb ({memory_gb}) must be positive, "
                         "e.g. recommend(8e9, memory_gb=16)")
    if tolerance_pct < 0:
        raise ValueError(f"tolerance_pct={tolerance_pct} must be >= 0 (percent of perplexity you accept to lose)")
    if context < 0:
        raise ValueError(f"context={context} must be >= 0 tokens (e.g. 4096; 0 leaves the KV cache out)")
    options = candidates(hardware, calibration, finetune)
    headroom = HEADROOM_GB[hardware] if headroom_gb is None else float(headroom_gb)
    if headroom < 0:
        raise ValueError(f"headroom_gb={headroom:g} must be >= 0: it is the memory the system keeps for itself "
                         "(e.g. 2 on a laptop)")
    if kv_cache_gb is None:
        kv_cache_gb = kv_cache_gb_at(parameters, context)
    usable = memory_gb - headroom
    considered = [{"label": c.label, "bits_per_weight": round(c.bits_per_weight, 3),
                   "gb": round(needed_gb(parameters, c, kv_cache_gb), 2)} for c in options]
    for row in considered:
        row["fits"] = row["gb"] <= usable
    chosen = next((c for c, row in zip(options, considered) if row["fits"]), None)
    size = f"{parameters / 1e9:g}B parameters"
    if chosen is None:
        smallest = considered[-1]
        return Advice(None, smallest["gb"], memory_gb, None, False, [
            f"Nothing fits: even {smallest['label']} needs {smallest['gb']:.1f} GB for {size} "
            f"and {max(usable, 0):g} of the {memory_gb:g} GB are free ({headroom:g} GB kept for the system). Choose a "
            "smaller model, a shorter context, or more memory."], considered, headroom, kv_cache_gb)
    gb = needed_gb(parameters, chosen, kv_cache_gb)
    low, high = TYPICAL_LOSS_PCT[chosen.loss_class]
    cache = f" + {kv_cache_gb:.2f} GB KV cache at {context:,} tokens" if kv_cache_gb else ""
    reasons = [f"{HARDWARE[hardware]}: {chosen.note}." if chosen.note else f"{HARDWARE[hardware]}.",
               f"{chosen.label} stores {chosen.bits_per_weight:.2f} bits per weight: {gb:.1f} GB of the "
               f"{usable:g} GB free for {size} (weights + {RUNTIME_OVERHEAD:.0%} runtime{cache}; "
               f"{headroom:g} of {memory_gb:g} GB kept for the system)."]
    better = [row for row in considered if row["bits_per_weight"] > chosen.bits_per_weight and not row["fits"]]
    if better:
        reasons.append(f"More bits would not fit: {better[-1]['label']} needs {better[-1]['gb']:.1f} GB.")
    reasons.append(f"Expected loss ({chosen.loss_class}): +{low:g} to +{high:g} % perplexity on 7B-70B models.")
    within = low <= tolerance_pct
    if not within:
        reasons.append(f"That exceeds your tolerance of {tolerance_pct:g} %: a smaller model at more bits is "
                       "usually the better trade at this memory, or, if you can train, quantization-aware "
                       "training (QAT), which recovers much of what rounding after training loses.")
    if not calibration and chosen.loss_class in ("4-bit, rounding", "3-bit", "2-bit") and not finetune:
        reasons.append("With ~128 calibration samples a calibrated method (GPTQ, AWQ, an imatrix) would lose less.")
    return Advice(chosen, gb, memory_gb, (low, high), within, reasons, considered, headroom, kv_cache_gb)


def evidence(rows: list[dict], candidate: Candidate) -> dict | None:
    """The measured point (a ``qtutor.eval.sweep`` row) that best matches ``candidate``: the same method and
    format, else the same format rounded to nearest (marked ``"proxy": True``), else None."""
    def same_format(row: dict) -> bool:
        return str(row.get("format", "")).lower() == candidate.fmt.lower()

    exact = [r for r in rows if same_format(r) and r.get("method") == candidate.method]
    if exact:
        return exact[0]
    proxy = [r for r in rows if same_format(r) and r.get("method") == "rtn"]
    return {**proxy[0], "proxy": True} if proxy else None
