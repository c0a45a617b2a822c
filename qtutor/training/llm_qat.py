"""LLM-QAT: quantization-aware training without the training data, the float model teaching its quantized self.

Liu, Oguz, Zhao, Chang, Stock, Mehdad, Shi, Krishnamoorthi, Chandra (2023), "LLM-QAT: Data-Free Quantization
Aware Training for Large Language Models", arXiv:2305.17888 (reference code: facebookresearch/LLM-QAT).

    teacher = copy.deepcopy(model)                                # the float model, kept as it is
    sequences = generate_data(teacher, 64, 256)                   # (64, 256) token ids the model wrote itself
    report = prepare(model, w_bits=4, a_bits=8, kv_bits=4)        # W4-A8-KV4, fake-quantized in every forward
    history = distill(model, teacher, sequences, steps=100, lr=1e-4)

**Data from the model itself.** The pre-training text of an LLM is rarely public, and a small fine-tuning set
does not cover what the model knows. So the float model writes the training text: start from one token, decode
the next few greedily, then *sample* the rest from the model's own next-token distribution,

    x_0 = start token,   x_t = argmax p(. | x_<t)  for t < j  (j = 3, 4 or 5),   x_t ~ p(. | x_<t)  afterwards.

The greedy prefix makes each sequence begin the way the model most believes; sampling then keeps the text as
varied as the model's distribution (greedy decoding alone falls into repetition). The reference starts from
*every* token of LLaMA's vocabulary (32,000: 64 chunks of 500 ids) once for each j in {3, 4, 5} and samples up to
2048 tokens; :func:`generate_data` draws the start tokens at random instead, for a few dozen short sequences.

**Distillation.** The teacher is the same float model; the student is trained to match its whole next-token
distribution at every position, not just the token that was written:

    L = (1/N) sum_i KL(p_teacher(. | x_<i) || p_student(. | x_<i))      (nats per token)

**What is quantized, all with dynamic (per call) MinMax ranges and a straight-through estimator (STE):**

* weights, symmetric per output channel:  s = (2^(b-1) - 1) / (max|w_row| + 1e-6),  w_hat = round(w s) / (s + 1e-6)
  (no clamp is needed: |round(w s)| <= 2^(b-1) - 1). The 1e-6 in the division is the reference's, kept.
* the input of every linear, per token: symmetric as above (the reference's default), or asymmetric,
  alpha = max - min, beta = min,  x_hat = round((x - beta) / alpha (2^b - 1)) / (2^b - 1) alpha + beta
  (a grid that holds min and max exactly, and not necessarily 0).
* the KV cache: the outputs of k_proj and v_proj (before RoPE), per token, symmetric at kv_bits. As in the
  reference, one scale covers a token's keys of *all* heads (``quantized_kv_cache`` in
  :mod:`qtutor.model.activations` gives each head its own). The lm_head stays float.

The paper's settings W-A-KV: 4-8-8, 4-8-4, 4-6-16 and 8-8-4 (16 = float): 4-8-4 is where KV-cache quantization
trained in pays most, since a 4-bit cache applied after training costs a model much more than 8 bits.

**The reference's STE quirk, reproduced here.** The backward pass of every quantizer passes the gradient through
unchanged *except where the input is >= 2 or <= -2, where it is set to zero* (``clip_val = [-2, 2]`` is hard-coded,
and the clamp it belongs to is commented out of the forward pass, so nothing is clipped there). For weights
(|w| << 2) that never happens; for activations and keys it does: an input of 3.1 is quantized like any other value
but sends no gradient back. :data:`GRADIENT_CLIP` = 2.0 is that quirk; ``gradient_clip=None`` gives the plain STE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qtutor.training.loop import TrainingHistory, train

BITS = range(3, 9)  # what the MinMax quantizers take here (the reference's weights below 3 bits use other rules)
FLOAT = (None, 16)  # no quantization: the paper writes 16 for the float parts of a setting
GRADIENT_CLIP = 2.0  # the reference's hard-coded clip_val: no gradient where the input is outside (-2, 2)
EPSILON = 1e-6  # the reference's guard in the symmetric scale
ASYMMETRIC_EPSILON = 1e-8  # and in the asymmetric range
PAPER_SETTINGS = ((4, 8, 8), (4, 8, 4), (4, 6, 16), (8, 8, 4))  # W-A-KV bits
ROLES = ("q", "k", "v", "o", "gate", "up", "down")  # the lm_head stays float
KV_ROLES = ("k", "v")


def check_bits(name: str, bits: Any) -> int | None:
    """``bits`` as the quantizers take it: an integer 3 ... 8, or None for float (16 and None both mean float)."""
    if bits in FLOAT and not isinstance(bits, bool):
        return None
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and int(bits) in BITS:
        return int(bits)
    raise ValueError(f"{name}={bits!r}: LLM-QAT's MinMax quantizers take {BITS.start} to {BITS.stop - 1} bits here "
                     f"(16 or None keeps that part float; the reference's 1- and 2-bit weights use other "
                     f"quantizers, not built here)")


def gradient_mask(x: torch.Tensor, clip: float | None) -> torch.Tensor:
    """1 where the STE passes the gradient, 0 where the reference's quirk stops it (input >= clip or <= -clip)."""
    if clip is None:
        return torch.ones_like(x)
    return ((x < clip) & (x > -clip)).to(x.dtype)


class SymmetricQuantizer(torch.autograd.Function):
    """Symmetric MinMax fake quantization along the last axis (a weight's row, a token's features):
    s = (2^(b-1) - 1) / (max|x| + 1e-6), x_hat = round(x s) / (s + 1e-6). Backward: the clipped STE."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, clip: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = clip
        s = (2 ** (bits - 1) - 1) / (x.abs().amax(dim=-1, keepdim=True) + EPSILON)
        return torch.round(x * s) / (s + EPSILON)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * gradient_mask(x, ctx.clip), None, None


class AsymmetricQuantizer(torch.autograd.Function):
    """Asymmetric MinMax fake quantization along the last axis: alpha = max - min, beta = min,
    x_hat = round((x - beta) / alpha (2^b - 1)) / (2^b - 1) alpha + beta. Backward: the clipped STE."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, clip: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = clip
        beta = x.amin(dim=-1, keepdim=True)
        alpha = x.amax(dim=-1, keepdim=True) - beta + ASYMMETRIC_EPSILON
        levels = 2**bits - 1
        return torch.round((x - beta) / alpha * levels) / levels * alpha + beta

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * gradient_mask(x, ctx.clip), None, None


def quantize_symmetric(x: torch.Tensor, bits: int, clip: float | None = GRADIENT_CLIP) -> torch.Tensor:
    return SymmetricQuantizer.apply(x, bits, clip)


def quantize_asymmetric(x: torch.Tensor, bits: int, clip: float | None = GRADIENT_CLIP) -> torch.Tensor:
    return AsymmetricQuantizer.apply(x, bits, clip)


class LLMQATLinear(torch.nn.Module):
    """y = Q_a(x) Q_w(W)^T + b, and for k_proj / v_proj y_hat = Q_kv(y), the key or value the cache stores.

    Q_w: symmetric per output channel at ``w_bits``; Q_a: per token at ``a_bits`` (symmetric, or asymmetric with
    ``activation_sym=False``); Q_kv: symmetric per token at ``kv_bits``. None (or 16) leaves that part float.
    ``weight`` is the float latent weight the optimizer updates; there is no learned scale (dynamic MinMax)."""

    def __init__(self, linear: torch.nn.Linear, w_bits: int | None = 4, a_bits: int | None = 8,
                 kv_bits: int | None = None, activation_sym: bool = True,
                 gradient_clip: float | None = GRADIENT_CLIP):
        super().__init__()
        self.w_bits, self.a_bits = check_bits("w_bits", w_bits), check_bits("a_bits", a_bits)
        self.kv_bits = check_bits("kv_bits", kv_bits)
        self.activation_sym, self.gradient_clip = bool(activation_sym), gradient_clip
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = torch.nn.Parameter(linear.weight.detach().clone())
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone())

    def fake_quantized_weight(self) -> torch.Tensor:
        if self.w_bits is None:
            return self.weight
        return quantize_symmetric(self.weight, self.w_bits, self.gradient_clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.a_bits is not None:
            quantize = quantize_symmetric if self.activation_sym else quantize_asymmetric
            x = quantize(x, self.a_bits, self.gradient_clip)
        y = torch.nn.functional.linear(x, self.fake_quantized_weight().to(x.dtype), self.bias)
        if self.kv_bits is not None:
            y = quantize_symmetric(y, self.kv_bits, self.gradient_clip)
        return y

    def extra_repr(self) -> str:
        bits = lambda b: "float" if b is None else f"{b}-bit"  # noqa: E731
        kv = "" if self.kv_bits is None else f", cache {bits(self.kv_bits)}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, weights {bits(self.w_bits)}, "
                f"inputs {bits(self.a_bits)} {'sym' if self.activation_sym else 'asym'}{kv}, "
                f"gradient_clip={self.gradient_clip}")


@dataclass
class LLMQATReport:
    """What :func:`prepare` did: the W-A-KV setting and the layers now fake-quantizing (``kv_layers`` also
    quantize their output, the KV cache)."""

    w_bits: int | None
    a_bits: int | None
    kv_bits: int | None
    activation_sym: bool
    gradient_clip: float | None
    layers: list[str] = field(default_factory=list)
    kv_layers: list[str] = field(default_factory=list)

    @property
    def setting(self) -> str:
        """The paper's name for it, e.g. ``"4-8-4"`` (16 for a float part)."""
        return "-".join(str(16 if b is None else b) for b in (self.w_bits, self.a_bits, self.kv_bits))


def prepare(model: Any, w_bits: int | None = 4, a_bits: int | None = 8, kv_bits: int | None = 8,
            activation_sym: bool = True, gradient_clip: float | None = GRADIENT_CLIP) -> LLMQATReport:
    """Put an :class:`LLMQATLinear` in place of every q/k/v/o/gate/up/down ``nn.Linear`` (the lm_head stays
    float), with the cache quantizer on k_proj and v_proj. Undo with :func:`convert` or by reloading."""
    from qtutor.model import linear_layers, replace_module

    w_bits, a_bits, kv_bits = check_bits("w_bits", w_bits), check_bits("a_bits", a_bits), check_bits("kv_bits",
                                                                                                    kv_bits)
    layers = [layer for layer in linear_layers(model) if layer.role in ROLES and not layer.transposed]
    if not layers:
        raise ValueError(f"the model has no linear layers of roles {', '.join(ROLES)} to quantize")
    if kv_bits is not None and not any(layer.role in KV_ROLES for layer in layers):
        raise ValueError("kv_bits needs separate k_proj / v_proj layers (a fused qkv projection is not supported); "
                         "use kv_bits=None")
    report = LLMQATReport(w_bits, a_bits, kv_bits, bool(activation_sym), gradient_clip)
    for layer in layers:
        cache_bits = kv_bits if layer.role in KV_ROLES else None
        replace_module(model, layer.name, LLMQATLinear(layer.module, w_bits, a_bits, cache_bits, activation_sym,
                                                       gradient_clip))
        report.layers.append(layer.name)
        if cache_bits is not None:
            report.kv_layers.append(layer.name)
    return report


def quantize_cache_after(model: Any, kv_bits: int) -> list[str]:
    """Switch the cache quantizer on (at ``kv_bits``) in the k_proj / v_proj :class:`LLMQATLinear` of a model
    prepared and trained without it: KV-cache quantization applied after training, the comparison with a cache
    trained in. Returns the layers changed."""
    from qtutor.model import role_of

    bits = check_bits("kv_bits", kv_bits)
    changed = [name for name, module in model.named_modules()
               if isinstance(module, LLMQATLinear) and role_of(name) in KV_ROLES]
    if not changed:
        raise ValueError("no prepared k_proj / v_proj layers: call prepare(model, ...) first")
    for name in changed:
        model.get_submodule(name).kv_bits = bits
    return changed


def convert(model: Any) -> dict[str, torch.Tensor]:
    """Replace every :class:`LLMQATLinear` by a plain ``nn.Linear`` holding its fake-quantized weight W_hat (the
    weights to ship), and return them by layer name. The activation and cache quantizers are gone with it: they
    act at run time, so an inference engine applies them (e.g. :func:`qtutor.model.activations.quantized_inputs`)."""
    from qtutor.model import replace_module

    weights = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, LLMQATLinear):
            continue
        with torch.no_grad():
            weights[name] = module.fake_quantized_weight().detach().clone()
        plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        plain = plain.to(device=module.weight.device, dtype=module.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(weights[name])
            if module.bias is not None:
                plain.bias.copy_(module.bias)
        replace_module(model, name, plain)
    return weights


# ---- the data: text the float model writes itself ------------------------------------------------------------------
def start_tokens(vocab_size: int, n_sequences: int, seed: int = 0,
                 greedy_tokens: tuple[int, int] = (3, 5)) -> tuple[np.ndarray, np.ndarray]:
    """The first token of each sequence (uniform over the vocabulary) and its greedy prefix length j (uniform in
    ``greedy_tokens``, both ends included): what :func:`generate_data` draws first, from ``seed``."""
    low, high = greedy_tokens
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab_size, n_sequences), rng.integers(low, high + 1, n_sequences)


def generate_data(model: Any, n_sequences: int, length: int, seed: int = 0, greedy_tokens: tuple[int, int] = (3, 5),
                  batch_size: int = 16, top_k: int | None = None, progress: bool = True) -> np.ndarray:
    """``n_sequences`` sequences of ``length`` token ids (int64) written by ``model``: a random start token, the
    next tokens greedy up to a prefix of j tokens (j drawn from ``greedy_tokens``, the start token included, as
    the reference's ``max_length=j``), then sampled from the full next-token distribution at temperature 1.

    Decoding uses the model's KV cache, ``batch_size`` sequences at a time. The same seed (and batch size) gives
    the same sequences. A sampled end-of-text token is kept and decoding goes on (the reference stops there).
    ``top_k`` samples from the k most likely tokens only: transformers' ``generate(do_sample=True)``, which the
    reference calls, samples from the top 50 by default."""
    import inspect

    from tqdm.auto import tqdm
    from transformers import DynamicCache

    for name, value in (("n_sequences", n_sequences), ("length", length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}={value!r}: give an integer >= 1")
    low, high = greedy_tokens
    if not 1 <= low <= high:
        raise ValueError(f"greedy_tokens={greedy_tokens!r}: a range (low, high) with 1 <= low <= high, e.g. (3, 5)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k!r}: a number of tokens >= 1, or None (the full distribution)")
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and length > context:
        raise ValueError(f"length={length} is longer than the model's context ({context} positions)")
    vocab_size = model.get_output_embeddings().out_features
    starts, prefix_lengths = start_tokens(vocab_size, n_sequences, seed, greedy_tokens)
    device = next(model.parameters()).device
    # transformers 5 names the argument ``cache``; earlier versions ``past_key_values``
    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    generator = torch.Generator(device=device).manual_seed(seed)
    sequences = np.empty((n_sequences, length), dtype=np.int64)
    sequences[:, 0] = starts
    was_training = model.training
    model.eval()
    batches = range(0, n_sequences, batch_size)
    bar = tqdm(total=len(batches) * (length - 1), desc="generating", disable=not progress, leave=False)
    with torch.no_grad():
        for first in batches:
            rows = slice(first, first + batch_size)
            token = torch.from_numpy(starts[rows]).to(device).view(-1, 1)
            greedy_until = torch.from_numpy(prefix_lengths[rows]).to(device)
            cache = DynamicCache()  # filled in place, one position per forward
            for position in range(1, length):
                logits = model(input_ids=token, use_cache=True, **{cache_argument: cache}).logits[:, -1].float()
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                sampled = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(1)
                token = torch.where(position < greedy_until, logits.argmax(dim=-1), sampled).view(-1, 1)
                sequences[rows, position] = token.squeeze(1).cpu().numpy()
                bar.update(1)
    bar.close()
    model.train(was_training)
    return sequences


# ---- the training: distillation from the float model ---------------------------------------------------------------
def kl_per_token(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(p_teacher || p_student) = sum_v p_t(v) (log p_t(v) - log p_s(v)), in nats.
    (The reference's ``kl_div(..., reduction="batchmean")`` sums over the positions of a sequence instead, a
    loss 2048 times larger at its length; with Adam the scale of the loss hardly changes the steps.)"""
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()


def distill(student: Any, teacher: Any, sequences: Any, steps: int = 100, lr: float = 2e-5, batch: int = 8,
            seq_len: int = 256, seed: int = 0, progress: bool = True) -> TrainingHistory:
    """Train ``student`` (prepared) to match ``teacher``'s next-token distributions on windows of ``sequences``
    (a 2-D array from :func:`generate_data`, or a real token stream): :func:`qtutor.training.loop.train` with
    the loss :func:`kl_per_token`, the teacher run under ``torch.no_grad``. lr 2e-5 is the paper's (with a cosine
    schedule over one epoch of 96,000 sequences); a few dozen steps on a small model need more."""
    if student is teacher:
        raise ValueError("the student and the teacher are the same model: keep a float copy as the teacher "
                         "(teacher = copy.deepcopy(model)) before prepare(model)")
    student_vocab = student.get_output_embeddings().out_features
    teacher_vocab = teacher.get_output_embeddings().out_features
    if student_vocab != teacher_vocab:
        raise ValueError(f"the student predicts {student_vocab} tokens, the teacher {teacher_vocab}: distillation "
                         f"compares their distributions token by token, so they need the same vocabulary")
    teacher.eval()

    def loss(model: Any, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids, use_cache=False).logits
        return kl_per_token(teacher_logits, model(input_ids=ids, use_cache=False).logits)

    return train(student, sequences, steps=steps, lr=lr, batch=batch, seq_len=seq_len, seed=seed,
                 progress=progress, loss=loss)
