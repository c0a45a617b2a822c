"""Write a quantized model as a compressed-tensors checkpoint: the layout llm-compressor writes and vLLM reads.

    summary = export_compressed_tensors(model, tokenizer, "smollm2-w4a16", scheme="W4A16", group_size=64)
    # then, with the compressed-tensors package installed:
    #   AutoModelForCausalLM.from_pretrained("smollm2-w4a16")        (transformers, CPU)
    #   vllm serve smollm2-w4a16                                       (a GPU)

A compressed-tensors checkpoint is an ordinary Hugging Face directory (config.json, tokenizer, model.safetensors)
whose config.json carries a ``quantization_config``: which linears are quantized (``targets``, ``ignore``), to
what (``weights``/``input_activations``: bits, int or float, symmetric, and the *strategy*: one scale per
``tensor``, per ``channel`` (output row), per ``group`` of ``group_size`` inputs, or ``tensor_group`` for NVFP4's
two levels), and how the bytes are laid out (``format``). Each quantized linear ``L`` stores, instead of
``L.weight``:

    pack-quantized (W4A16, W8A16)   L.weight_packed   int32 (out, ceil(in*b/32)): each row's codes q + 2^(b-1)
                                                      (q signed, in [-2^(b-1), 2^(b-1)-1]) as one little-endian
                                                      bit stream, code j at bits j*b .. j*b+b-1
                                    L.weight_scale    (out, in/g) or (out, 1) per channel
                                    L.weight_shape    int64 [out, in]
                                    W = q * weight_scale
    float-quantized (FP8, FP8_DYNAMIC)
                                    L.weight          float8_e4m3fn (out, in): the codes themselves
                                    L.weight_scale    float32 (1,) per tensor or (out, 1) per channel
                                    L.input_scale     float32 (1,): FP8 only, the calibrated (static) scale of
                                                      the layer's input; FP8_DYNAMIC scales each token at run time
                                    W = weight * weight_scale,   x -> e4m3(clip(x / input_scale)) * input_scale
    nvfp4-pack-quantized (NVFP4A16) L.weight_packed   uint8 (out, in/2): two E2M1 codes a byte, low nibble first
                                    L.weight_scale    float8_e4m3fn (out, in/16): the block scales s_b
                                    L.weight_global_scale float32 (1,): our s_enc = 448 * 6 / max|W|
                                    W = e2m1 * s_b / s_enc

These are exactly the numbers qtutor's formats already produce (INT codes with float16-representable scales,
E4M3 codes with a float32 scale, NVFP4's codes, E4M3 block scales and s_enc), so the export only rearranges them.
Before writing, every layer is decoded back from the arrays about to be written and compared with the weight the
model computes with; a method whose result these formulas cannot express (a codebook, a rotated basis, HQQ's
real-valued zero points, a run-time transform, a column permutation) is refused with the reason, and no file
that would load as a different model is written.

Loading with transformers (CPU, compressed-tensors installed): ``AutoModelForCausalLM.from_pretrained(out)`` runs
the INT and FP8 checkpoints as written, FP8's input rounding included. compressed-tensors decodes NVFP4 in
bfloat16, which its compressed CPU path cannot multiply with a float32 model: load NVFP4A16 with
``quantization_config=CompressedTensorsConfig(dequantize=True)``; its weights are then ours rounded to bfloat16
(the stored codes and scales are exact).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtutor import formats
from qtutor.formats.base import check_group_size
from qtutor.formats.packing import pack_bits, unpack_bits

COMPRESSED_TENSORS_VERSION = "0.20.1"  # the version of the layout written (the reader's package version)


@dataclass(frozen=True)
class Scheme:
    """One compressed-tensors scheme, named as llm-compressor names its presets."""

    name: str
    fmt: str  # qtutor's format for the weights
    group_size: int  # qtutor's granularity: N > 0 groups, -1 per channel, 0 per tensor
    sym: bool
    layout: str  # compressed-tensors' "format"
    activations: str | None = None  # None (weight-only), "static" per tensor, "token" dynamic per token
    description: str = ""

    @property
    def strategy(self) -> str:
        if self.fmt == "nvfp4":
            return "tensor_group"
        return {0: "tensor", -1: "channel"}.get(self.group_size, "group")

    def weights_args(self, group_size: int) -> dict:
        """The ``weights`` entry of the config (the fields compressed-tensors' QuantizationArgs reads)."""
        fmt = formats.get(self.fmt)
        args = {"num_bits": int(fmt.bits), "type": "int" if fmt.family == "integer" else "float",
                "symmetric": self.sym, "strategy": self.strategy, "dynamic": False,
                "group_size": group_size if group_size > 0 else None, "observer": "minmax"}
        if self.fmt == "nvfp4":
            args.update(scale_dtype="torch.float8_e4m3fn", zp_dtype="torch.float8_e4m3fn")
        return args

    def input_args(self) -> dict | None:
        if self.activations is None:
            return None
        return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor" if
                self.activations == "static" else "token", "dynamic": self.activations != "static",
                "observer": "minmax" if self.activations == "static" else None}


SCHEMES = {scheme.name: scheme for scheme in (
    Scheme("W4A16", "int4", 128, True, "pack-quantized", description="INT4 weights, symmetric, groups of 128"),
    Scheme("W8A16", "int8", -1, True, "pack-quantized", description="INT8 weights, symmetric, one scale a row"),
    Scheme("FP8", "fp8_e4m3", 0, True, "float-quantized", "static",
           description="E4M3 weights (a scale per tensor) and inputs (a calibrated scale per tensor)"),
    Scheme("FP8_DYNAMIC", "fp8_e4m3", -1, True, "float-quantized", "token",
           description="E4M3 weights (a scale per row) and inputs (a scale per token, at run time)"),
    Scheme("NVFP4A16", "nvfp4", 16, True, "nvfp4-pack-quantized",
           description="NVFP4 weights: E2M1 codes, an E4M3 scale per 16, a float32 scale per tensor"),
)}

NOT_WRITTEN = {  # schemes a reader knows that this export does not write, and why
    "NVFP4": "NVFP4 with NVFP4 activations (W4A4) needs a calibrated global input scale per layer and the "
             "reader's per-16 dynamic activation rounding, which qtutor does not emulate the same way; "
             "export NVFP4A16 (weights only)",
    "W4A16_ASYM": "compressed-tensors 0.20.1 writes asymmetric zero points packed down the columns, but its "
                  "transformers loader expects them unpacked and refuses the checkpoint; export W4A16 (symmetric)",
    "W8A8": "INT8 activations are not written; export W8A16, or FP8 for 8-bit activations",
}


def scheme_of(name: str) -> Scheme:
    key = str(name).upper()
    if key in SCHEMES:
        return SCHEMES[key]
    if key in NOT_WRITTEN:
        raise ValueError(f"scheme {name!r} is not exported: {NOT_WRITTEN[key]}")
    raise ValueError(f"unknown scheme {name!r}; the schemes are: {', '.join(SCHEMES)}")


# ---- one layer: qtutor's QuantizedTensor -> the arrays compressed-tensors stores ---------------------------
def dense_pack_int32(codes: np.ndarray, bits: int) -> np.ndarray:
    """Rows of signed b-bit codes -> int32 words (rows, ceil(cols*b/32)): each row one little-endian bit stream
    of q + 2^(b-1), padded with zero bits to a multiple of 32 codes (compressed-tensors' pack_to_int32)."""
    rows, cols = codes.shape
    unsigned = codes.astype(np.int64) + (1 << (bits - 1))
    padded = np.zeros((rows, -(-cols // 32) * 32), dtype=np.int64)
    padded[:, :cols] = unsigned
    words = pack_bits(padded, bits).view("<i4").reshape(rows, -1)
    return np.ascontiguousarray(words[:, : -(-cols * bits // 32)])


def layer_arrays(q: Any, scheme: Scheme) -> dict[str, np.ndarray]:
    """The arrays stored for one linear (names without the layer's prefix), from its QuantizedTensor."""
    fmt = formats.get(q.fmt)
    out, inp = q.shape
    if scheme.layout == "pack-quantized":
        return {"weight_packed": dense_pack_int32(q.codes, fmt.bits),
                "weight_scale": np.asarray(q.scales, np.float32).reshape(out, -1),
                "weight_shape": np.array([out, inp], dtype=np.int64)}
    if scheme.layout == "float-quantized":
        scale = np.asarray(q.scales, np.float32)
        return {"weight": np.asarray(q.codes).astype(np.uint8),  # the E4M3 bytes, written as float8_e4m3fn
                "weight_scale": scale.reshape(1) if scheme.group_size == 0 else scale.reshape(out, 1)}
    # nvfp4-pack-quantized
    return {"weight_packed": pack_bits(q.codes, 4).reshape(out, inp // 2),
            "weight_scale": np.asarray(q.extra["scale_codes"]).astype(np.uint8).reshape(out, inp // 16),
            "weight_global_scale": np.array([q.extra["tensor_scale"]], dtype=np.float32)}


def decode_arrays(arrays: dict[str, np.ndarray], scheme: Scheme) -> np.ndarray:
    """What a reader computes from the stored arrays, in float32 (the formulas of the module docstring)."""
    fmt = formats.get(scheme.fmt)
    if scheme.layout == "pack-quantized":
        out, inp = (int(n) for n in arrays["weight_shape"])
        q = unpack_dense_int32(arrays["weight_packed"], fmt.bits, inp)
        scale = arrays["weight_scale"]
        q = q.reshape(out, scale.shape[1], -1).astype(np.float32)
        return (q * scale[:, :, None]).reshape(out, inp).astype(np.float32)
    if scheme.layout == "float-quantized":
        values = fmt.values(arrays["weight"])
        return (values * arrays["weight_scale"]).astype(np.float32)
    out = arrays["weight_packed"].shape[0]
    codes = unpack_bits(arrays["weight_packed"], 4, arrays["weight_packed"].size * 2).reshape(out, -1)
    element, scale_format = fmt.element, fmt.scale_format
    blocks = element.values(codes).reshape(out, -1, 16) * scale_format.values(arrays["weight_scale"])[:, :, None]
    return (blocks / arrays["weight_global_scale"][0]).reshape(out, -1).astype(np.float32)


def unpack_dense_int32(words: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """Inverse of :func:`dense_pack_int32`: signed codes (rows, cols)."""
    rows, row_words = words.shape
    full = -(-cols // 32) * bits  # the words of a row padded to a multiple of 32 codes
    padded = np.zeros((rows, full), dtype="<i4")
    padded[:, :row_words] = words
    codes = unpack_bits(padded.view(np.uint8), bits, rows * full * 32 // bits).reshape(rows, -1)[:, :cols]
    return codes - (1 << (bits - 1))


def check_expressible(q: Any, scheme: Scheme, name: str, W_model: np.ndarray) -> dict[str, np.ndarray]:
    """The layer's arrays, after checking that they decode to the weight the model computes with."""
    problem = None
    if q.fmt != formats.get(scheme.fmt).name:
        problem = f"its weights are {q.fmt}, not {scheme.fmt}"
    elif q.column_order is not None:
        problem = "its columns are stored permuted (act_order); quantize without act_order"
    elif q.extra.get("side_bits") or q.extra.get("zero_bits") or not q.sym:
        problem = "it stores numbers besides codes and scales (zero points or side matrices)"
    if problem is None:
        arrays = layer_arrays(q, scheme)
        if np.array_equal(decode_arrays(arrays, scheme), W_model):
            return arrays
        problem = "its codes and scales, decoded by the scheme's formula, are not the weight the model computes with"
        if type(q).__name__ != "QuantizedTensor":
            problem += f" ({type(q).__name__} decodes with a step of its own, e.g. a rotation back)"
    raise ValueError(f"{name}: the {scheme.name} checkpoint cannot express this layer: {problem}. "
                     "Nothing was written. Export a method that rounds to the scheme's own grid (rtn, gptq, awq).")


# ---- the checkpoint ---------------------------------------------------------------------------------------
def quantization_config(scheme: Scheme, group_size: int, ignore: list[str]) -> dict:
    return {"quant_method": "compressed-tensors", "format": scheme.layout, "quantization_status": "compressed",
            "version": COMPRESSED_TENSORS_VERSION, "global_compression_ratio": None, "kv_cache_scheme": None,
            "ignore": ignore, "config_groups": {"group_0": {
                "targets": ["Linear"], "weights": scheme.weights_args(group_size),
                "input_activations": scheme.input_args(), "output_activations": None, "format": scheme.layout}}}


def _torch_tensor(name: str, array: np.ndarray, scheme: Scheme) -> Any:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    float8 = (scheme.layout == "float-quantized" and name.endswith(".weight")) or (
        scheme.layout == "nvfp4-pack-quantized" and name.endswith(".weight_scale"))
    return tensor.view(torch.float8_e4m3fn) if float8 else tensor


def check_out_dir(out_dir: Any) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory: give a new directory, so that no "
                              "earlier checkpoint is overwritten or mixed with this one")
    return out


def export_compressed_tensors(model: Any, tokenizer: Any, out_dir: Any, scheme: str = "W4A16", *,
                              method: str = "rtn", group_size: Any = "scheme", calib: Any = None,
                              progress: bool = True, **method_kw) -> dict:
    """Quantize ``model`` with ``method`` to ``scheme``'s format and write it to ``out_dir``.

    The model is left quantized (fake-quant: it computes with the weights the checkpoint stores), so the caller
    can evaluate the very model that was written; ``summary["report"].restore()`` puts the float weights back.
    FP8's static input scales are calibrated on ``calib`` (token ids) with the weights already quantized, as
    :func:`qtutor.eval.sweep.evaluate` does with ``act_granularity="static"``; they are returned as
    ``summary["input_scales"]`` for :func:`qtutor.model.activations.quantized_inputs`.
    """
    import torch
    from safetensors.torch import save_file

    from qtutor.methods import declaration
    from qtutor.model import find_layer, get_weight, linear_layers
    from qtutor.model.activations import static_input_scales
    from qtutor.model.quantize import quantize_model

    chosen = scheme_of(scheme)
    out = check_out_dir(out_dir)
    declared = declaration(method)
    if declared.hook is not None or declared.replace is not None or declared.activations != "plain":
        raise ValueError(f"{declared.name} changes how the model runs (a run-time hook, a rotated basis or a whole "
                         f"model replacement); a {chosen.name} checkpoint stores only rounded linear weights")
    if chosen.activations == "static" and calib is None:
        raise ValueError(f"{chosen.name} stores a calibrated scale for each layer's input: give "
                         "calib=qt.data.calibration(32, 256) (the CLI does)")
    group_size = chosen.group_size if group_size in ("scheme", None) else int(group_size)
    if chosen.fmt == "nvfp4" and group_size != 16 or chosen.strategy in ("tensor", "channel") \
            and group_size != chosen.group_size:
        raise ValueError(f"{chosen.name} fixes its granularity; group_size={group_size} is not it")
    for layer in linear_layers(model):  # before any work: a group size the rows cannot take
        if layer.role != "lm_head":
            check_group_size(group_size, (layer.in_features,), f"{chosen.name} ({layer.name})")
    hooks_before = _hook_count(model)
    try:
        report = quantize_model(model, method, chosen.fmt, group_size, chosen.sym,
                                calib if declared.calibration or declared.layer_inputs else None,
                                keep_tensors=True, progress=progress, **method_kw)
    except ValueError as error:  # the method refuses the scheme's format, granularity or symmetry
        raise ValueError(f"{declared.name} cannot be exported as {chosen.name} ({chosen.description}; the "
                         f"scheme fixes the format, the granularity and the symmetry): {error}") from None
    try:
        if _hook_count(model) != hooks_before:
            raise ValueError(f"{declared.name} left code that runs with the model (forward hooks): a "
                             f"{chosen.name} checkpoint cannot carry it")
        quantized = {}
        for name, q in report.tensors.items():
            W = get_weight(find_layer(model, name))
            quantized[name] = check_expressible(q, chosen, name, np.asarray(W, dtype=np.float32))
        input_scales = {}  # stored as float32: the returned values are the stored ones
        if chosen.activations == "static":
            input_scales = {name: float(np.float32(scale))
                            for name, scale in static_input_scales(model, calib, "fp8_e4m3").items()}
    except BaseException:
        report.restore()
        raise
    state: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        module = key.rsplit(".", 1)[0]
        if module in quantized and key.endswith(".weight"):
            continue
        if key == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False):
            continue  # tied to the embedding: stored once, as Hugging Face does
        state[key] = value.detach().contiguous()
    for name, arrays in quantized.items():
        for suffix, array in arrays.items():
            state[f"{name}.{suffix}"] = _torch_tensor(f"{name}.{suffix}", array, chosen)
        if name in input_scales:
            state[f"{name}.input_scale"] = torch.tensor([input_scales[name]], dtype=torch.float32)
    ignore = [layer.name for layer in linear_layers(model) if layer.name not in quantized]
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = quantization_config(chosen, group_size, ignore)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return {"out": str(out), "scheme": chosen.name, "method": declared.name, "format": chosen.layout,
            "group_size": group_size, "layers": len(quantized), "ignored": ignore,
            "bits_per_weight": round(report.bits_per_weight, 4),
            "bytes": (out / "model.safetensors").stat().st_size, "input_scales": input_scales, "report": report}


def _hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
