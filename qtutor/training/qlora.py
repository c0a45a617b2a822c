"""QLoRA: fine-tune a model whose base weights stay frozen in 4 bits, through small float adapters beside them.

    report = prepare(model, rank=64, alpha=16)    # every linear but lm_head: NF4 base + LoRA adapters
    train(model, tokens, steps=..., lr=2e-4)      # qtutor.training.loop: only the adapters train
    merge(model)                                  # plain float linears W_hat + (alpha/r) B A, to evaluate or export

LoRA (Hu et al., 2021, arXiv:2106.09685) freezes a trained weight W (out x in) and learns a low-rank update beside
it; QLoRA (Dettmers, Pagnoni, Holtzman and Zettlemoyer, 2023, arXiv:2305.14314) also stores the frozen W in 4 bits,
as NF4 with double quantization (:mod:`qtutor.formats.normalfloat`), and dequantizes it on the fly:

    y = x dequant_NF4(W)^T  +  (alpha / r) x A^T B^T  (+ b)       A in R^{r x in},  B in R^{out x r}

A starts Kaiming-uniform (PEFT's default, a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and B at zero, so step 0 *is*
the NF4 base, output for output. Only A and B train (master weights in float32); the base, its bias, the
embeddings, the norms and lm_head are frozen. The gradient still flows *through* the frozen dequantized weight,
dL/dx = dL/dy dequant(W), to every earlier layer's adapters; the base gets no gradient of its own, so the
dequantized copy need not be kept for the backward pass: it is rebuilt there from the 4-bit bytes (as
bitsandbytes' ``MatMul4Bit`` does). The forward pass dequantizes to the compute dtype, bfloat16 as in QLoRA
(float32 allowed).

Memory per number: the base costs 4 + 8/64 + 32/(64*256) = 4.127 bits per weight; each adapted layer adds
r (in + out) adapter numbers at 32 bits, with their gradient (32) and AdamW's two float32 moments (64). Full
fine-tuning in bfloat16 with AdamW holds 16 (weight) + 16 (gradient) + 64 (moments) = 96 bits for *every* weight.

The defaults are QLoRA's (artidoro/qlora ``qlora.py``): r = 64, alpha = 16, dropout 0.0 on the adapter input
(the paper used 0.1 for models up to 13B and 0.05 for 33B/65B), no bias training, adapters on all linear layers
except lm_head; lr 2e-4, constant, ``max_grad_norm=0.3``, ``paged_adamw_32bit`` (a paged optimizer and gradient
checkpointing are memory tricks for large GPUs, not part of the method; they are left out here).

The tools people use: bitsandbytes (``bitsandbytes.nn.Linear4bit`` holds the packed NF4 weight and its
``QuantState``; ``bnb.matmul_4bit`` dequantizes and multiplies), reached through transformers'
``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
bnb_4bit_compute_dtype=torch.bfloat16)`` in ``from_pretrained``, and PEFT's
``get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, bias="none", target_modules="all-linear",
task_type="CAUSAL_LM"))``, which wraps every such layer as here. The tests check :class:`QLoRALinear` against
bitsandbytes' ``Linear4bit`` on the CPU: the same packed bytes and double-quantization state, the same output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qtutor import formats
from qtutor.formats.normalfloat import ALLOWED_BLOCKS, DOUBLE_QUANT_BLOCK, NF4_TABLE, dynamic_map

ROLES = ("q", "k", "v", "qkv", "o", "gate", "up", "down", "other")  # every linear role but lm_head
COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
BASES = ("nf4", "float")  # QLoRA's frozen 4-bit base, or plain LoRA's frozen float one (the comparison)


# ---- the frozen NF4 base, in torch (the NumPy twin: qtutor.formats.normalfloat) ---------------------------------
def unpack_codes(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Two 4-bit codes per byte, the first in the high nibble (bitsandbytes' layout) -> one code per element."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)[:numel]


def byte_table(table: torch.Tensor) -> torch.Tensor:
    """(256, 2): the values of the two codes in each possible byte, [table[b >> 4], table[b & 15]]. Looking a byte
    up once gives both weights, with no shifting or masking per element."""
    every_byte = torch.arange(256, device=table.device)
    return torch.stack([table[every_byte >> 4], table[every_byte & 0x0F]], dim=1)


def dequantize_absmax(codes: torch.Tensor, absmax2: torch.Tensor, offset: torch.Tensor,
                      dynamic: torch.Tensor) -> torch.Tensor:
    """Double quantization undone: absmax = DYNAMIC[c] * absmax2[block of 256] + mean (float32)."""
    per_code_scale = absmax2.repeat_interleave(DOUBLE_QUANT_BLOCK)[: codes.numel()]
    return dynamic.index_select(0, codes.long()) * per_code_scale + offset


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], block: int,
                   nf4_bytes: torch.Tensor) -> torch.Tensor:
    """W_hat = NF4[code] * absmax of the code's block of ``block`` weights along the row (float32);
    ``nf4_bytes`` is :func:`byte_table` of the NF4 values."""
    values = nf4_bytes.index_select(0, packed.long())  # (bytes, 2): the first element's value, then the second's
    return (values.reshape(-1, block) * absmax[:, None]).reshape(shape)


class FrozenBaseMatmul(torch.autograd.Function):
    """y = x W_hat^T + b with W_hat dequantized from the layer's bytes; backward: dL/dx = dL/dy W_hat, W_hat
    dequantized again (nothing but the 4-bit bytes is kept between the passes; W_hat and b get no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: QLoRALinear, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.layer = layer
        return torch.nn.functional.linear(x, layer.base_weight(x.dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return grad_y @ ctx.layer.base_weight(grad_y.dtype), None, None


# ---- checks -----------------------------------------------------------------------------------------------------
def check_adapter(rank: Any, alpha: Any, dropout: Any, in_features: int, out_features: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise TypeError(f"rank={rank!r}: the LoRA rank r is a whole number of directions (QLoRA uses 64; 8 or 16 "
                        f"are common for small models)")
    if rank <= 0:
        raise ValueError(f"rank={rank}: the LoRA rank must be >= 1 (QLoRA uses 64)")
    if rank > min(in_features, out_features):
        raise ValueError(f"rank={rank} is more than min(in_features={in_features}, out_features={out_features}); "
                         f"B A cannot have a higher rank than that: use rank <= {min(in_features, out_features)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not (math.isfinite(alpha)
                                                                                        and alpha > 0):
        raise ValueError(f"alpha={alpha!r}: the LoRA scale alpha must be a finite number > 0 (QLoRA uses 16, "
                         f"so the update is scaled by alpha / r = 16 / 64 = 0.25)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.number)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r}: the adapter-input dropout is a probability in [0, 1) (QLoRA's "
                         f"script uses 0.0; the paper 0.1 for models up to 13B, 0.05 above)")


def check_block(block: Any, in_features: int) -> None:
    if isinstance(block, bool) or block not in ALLOWED_BLOCKS:
        raise ValueError(f"block={block!r} is not a block size NF4 takes: one of {ALLOWED_BLOCKS} "
                         f"(bitsandbytes' sizes); QLoRA uses 64")
    if in_features % block:
        fits = [b for b in ALLOWED_BLOCKS if in_features % b == 0]
        hint = f"use block={fits[0]}" if fits else "leave this layer out (roles=...)"
        raise ValueError(f"block={block} does not divide in_features={in_features}: each block of NF4 weights "
                         f"must lie in one row; {hint}")


class QLoRALinear(torch.nn.Module):
    """A frozen NF4 (+ double quantization) base weight and trainable LoRA adapters: y = x W_hat^T + (alpha/r)
    x A^T B^T (+ b). Built from an ``nn.Linear``; the float weight is not kept (see the module docstring).

    Buffers, bitsandbytes' storage: ``weight_packed`` (uint8, two codes a byte), ``absmax_codes`` (uint8, one per
    block) with ``absmax2`` (float32, one per 256 blocks) and ``absmax_offset`` (float32) -- or with
    ``double_quant=False`` a float32 ``absmax`` per block; ``nf4_bytes`` and ``dynamic_code`` are the two lookup
    tables (the NF4 values as a :func:`byte_table`), format constants (not counted in ``bits_per_weight``)."""

    def __init__(self, linear: torch.nn.Linear, rank: int = 64, alpha: float = 16, dropout: float = 0.0,
                 block: int = 64, double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16,
                 generator: torch.Generator | None = None, base: str = "nf4"):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"base={base!r}: one of {BASES} (the NF4 base is QLoRA; a float base is plain LoRA)")
        self.base = base
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"QLoRALinear wraps a torch.nn.Linear, not {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        check_adapter(rank, alpha, dropout, self.in_features, self.out_features)
        if base == "nf4":
            check_block(block, self.in_features)
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={compute_dtype!r}: use torch.bfloat16 (QLoRA's), torch.float16 or "
                             f"torch.float32")
        W = linear.weight.detach().float()
        bad = int((~torch.isfinite(W)).sum())
        if bad:
            raise ValueError(f"{bad} NaN/Inf weight(s): the NF4 absmax of their block would be NaN. Fix the "
                             f"checkpoint (or the run that produced it) before quantizing")
        self.rank, self.alpha, self.scaling = int(rank), float(alpha), float(alpha) / int(rank)
        self.block, self.double_quant, self.compute_dtype = block, bool(double_quant), compute_dtype
        device = linear.weight.device
        if base == "nf4":
            self.register_nf4_base(W.cpu().numpy(), device)
        else:
            self.register_buffer("weight_float", W.clone())
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().clone(),
                                                                        requires_grad=False)
        A = torch.empty(self.rank, self.in_features, dtype=torch.float32)
        torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)  # PEFT's init of lora_A
        self.lora_A = torch.nn.Parameter(A.to(device))
        self.lora_B = torch.nn.Parameter(torch.zeros(self.out_features, self.rank, device=device))
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()

    def register_nf4_base(self, W: np.ndarray, device: torch.device) -> None:
        """Quantize W with qtutor's NF4 (:mod:`qtutor.formats.normalfloat`) and keep only bitsandbytes' bytes."""
        fmt = formats.get("nf4")
        q = fmt.encode(W, group_size=self.block, double_quant=self.double_quant)
        to_buffer = lambda array: torch.tensor(np.asarray(array), device=device)  # noqa: E731  (a copy, not a view)
        self.register_buffer("weight_packed", to_buffer(fmt.pack(q)))
        if self.double_quant:
            state = q.extra["double_quant"]
            self.register_buffer("absmax_codes", to_buffer(state["codes"].astype(np.uint8)))
            self.register_buffer("absmax2", to_buffer(state["absmax2"].astype(np.float32)))
            self.register_buffer("absmax_offset", to_buffer(np.asarray(state["offset"], np.float32)))
        else:
            self.register_buffer("absmax", to_buffer(q.scales.reshape(-1).astype(np.float32)))
        self.register_buffer("nf4_bytes", byte_table(to_buffer(NF4_TABLE)), persistent=False)
        self.register_buffer("dynamic_code", to_buffer(dynamic_map()), persistent=False)

    def storage_buffers(self) -> dict[str, torch.Tensor]:
        """The buffers that hold the base weight (what a checkpoint of the 4-bit base stores)."""
        if self.base == "float":
            return {"weight_float": self.weight_float}
        names = ("weight_packed", "absmax_codes", "absmax2", "absmax_offset") if self.double_quant else \
            ("weight_packed", "absmax")
        return {name: getattr(self, name) for name in names}

    @property
    def bits_per_weight(self) -> float:
        """Bits of the base's buffers per base weight: 4.127 + 32 / (in * out) with double quantization."""
        nbytes = sum(buffer.numel() * buffer.element_size() for buffer in self.storage_buffers().values())
        return 8 * nbytes / (self.in_features * self.out_features)

    def block_absmax(self) -> torch.Tensor:
        """The float32 absmax of every block (dequantized from 8 bits with double quantization)."""
        if not self.double_quant:
            return self.absmax
        return dequantize_absmax(self.absmax_codes, self.absmax2, self.absmax_offset, self.dynamic_code)

    def base_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_hat = dequant_NF4(W), computed in float32 (as bitsandbytes does), then cast to ``dtype``
        (a float base: W itself)."""
        if self.base == "float":
            return self.weight_float.to(dtype)
        shape = (self.out_features, self.in_features)
        W_hat = dequantize_nf4(self.weight_packed, self.block_absmax(), shape, self.block, self.nf4_bytes)
        return W_hat.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        base = FrozenBaseMatmul.apply(x.to(self.compute_dtype), self, bias)
        adapter_input = self.dropout(x).to(self.lora_A.dtype)  # the adapters compute in their own float32
        update = torch.nn.functional.linear(torch.nn.functional.linear(adapter_input, self.lora_A), self.lora_B)
        return base.to(x.dtype) + (self.scaling * update).to(x.dtype)

    def merged_weight(self) -> torch.Tensor:
        """W_hat + (alpha / r) B A in float32: the one matrix the layer now stands for."""
        return self.base_weight(torch.float32) + self.scaling * (self.lora_B.detach() @ self.lora_A.detach())

    def extra_repr(self) -> str:
        dq = " + double quant" if self.double_quant else ""
        stored = f"NF4 block {self.block}{dq}" if self.base == "nf4" else "float32"
        dropout = self.dropout.p if isinstance(self.dropout, torch.nn.Dropout) else 0.0
        return (f"in_features={self.in_features}, out_features={self.out_features}, base={stored} "
                f"({self.bits_per_weight:.3f} bits/weight, frozen), compute_dtype={self.compute_dtype}, "
                f"rank={self.rank}, alpha={self.alpha:g} (scaling {self.scaling:g}), dropout={dropout:g}, "
                f"bias={'frozen' if self.bias is not None else 'none'}")


@dataclass
class QLoRAReport:
    """What ``prepare`` did. ``frozen_parameters`` counts every number that does not train: the NF4 base weights
    (now buffers) and the model's other parameters (embeddings, norms, lm_head, biases)."""

    rank: int
    alpha: float
    dropout: float
    block: int
    double_quant: bool
    compute_dtype: str
    base: str = "nf4"
    layers: list[str] = field(default_factory=list)
    trainable_parameters: int = 0
    frozen_parameters: int = 0
    base_weights: int = 0
    base_bytes: int = 0

    @property
    def base_bits_per_weight(self) -> float:
        return 8 * self.base_bytes / self.base_weights

    @property
    def adapter_share(self) -> float:
        """Trainable numbers as a fraction of all the model's numbers."""
        return self.trainable_parameters / (self.trainable_parameters + self.frozen_parameters)


def prepare(model: Any, rank: int = 64, alpha: float = 16, dropout: float = 0.0, block: int = 64,
            double_quant: bool = True, compute_dtype: torch.dtype = torch.bfloat16, roles: tuple[str, ...] = ROLES,
            seed: int = 0, base: str = "nf4") -> QLoRAReport:
    """Freeze ``model`` and put a :class:`QLoRALinear` in place of every ``nn.Linear`` of ``roles`` (PEFT's
    ``get_peft_model`` on a 4-bit model). The adapters are initialised from ``seed``, layer by layer in module
    order, so a run is reproducible. ``base="float"`` keeps the frozen base in float32: plain LoRA, the
    comparison that shows what the 4-bit base costs (the adapters start the same from the same seed). Undo with :func:`merge` (float weights) or by reloading the model."""
    from qtutor.model import linear_layers, replace_module

    layers = [layer for layer in linear_layers(model) if layer.role in roles and not layer.transposed]
    if not layers:
        raise ValueError(f"the model has no nn.Linear layers of roles {', '.join(roles)} to adapt (lm_head is left "
                         f"out on purpose, and GPT-2's Conv1D layers are not handled)")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    report = QLoRAReport(rank=rank, alpha=alpha, dropout=dropout, block=block, double_quant=double_quant,
                         compute_dtype=str(compute_dtype).replace("torch.", ""), base=base)
    for layer in layers:
        try:
            replacement = QLoRALinear(layer.module, rank, alpha, dropout, block, double_quant, compute_dtype,
                                      generator, base)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{layer.name}: {error}") from None
        replace_module(model, layer.name, replacement)
        report.layers.append(layer.name)
        report.base_weights += layer.in_features * layer.out_features
        report.base_bytes += sum(b.numel() * b.element_size() for b in replacement.storage_buffers().values())
    report.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.frozen_parameters = report.base_weights + sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return report


def merge(model: Any, dtype: torch.dtype = torch.float32) -> dict[str, dict]:
    """Replace every :class:`QLoRALinear` by a plain ``nn.Linear`` holding W_hat + (alpha / r) B A (computed in
    float32, stored in ``dtype``: torch.bfloat16 for a bfloat16 model), for evaluation or export. The merged
    weight is no longer on the NF4 grid: quantizing it again loses part of the update, which is why QLoRA ships
    the adapters beside the 4-bit base. Returns per layer the rank, the scaling and ||(alpha/r) B A|| / ||W_hat||."""
    from qtutor.model import replace_module

    merged = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, QLoRALinear):
            continue
        with torch.no_grad():
            W_hat = module.base_weight(torch.float32)
            W = module.merged_weight()
            plain = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                                    device=W.device, dtype=dtype)
            plain.weight.copy_(W)
            if module.bias is not None:
                plain.bias.copy_(module.bias)
        merged[name] = {"rank": module.rank, "scaling": module.scaling,
                        "relative_update": float(torch.linalg.norm(W - W_hat) / torch.linalg.norm(W_hat))}
        replace_module(model, name, plain)
    return merged
