"""Fake-quantize a model with a GGUF mix: every tensor llama.cpp would quantize becomes what its blocks decode to.

Used for perplexity (``qtutor ppl --method gguf --format Q4_K_M``). The tied embedding of the tiny model is
quantized too, with the output's type, as llama.cpp does; norms stay float32. Rows are quantized
independently, so the q/k row permutation of the .gguf export does not change the decoded values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qtutor.formats.ggml import dequantize, quantize
from qtutor.methods.gguf import mixes
from qtutor.methods.gguf.export import gguf_name


@dataclass
class MixReport:
    fmt: str
    types: dict = field(default_factory=dict)  # GGUF name -> type
    weights: int = 0
    nbytes: float = 0.0
    originals: dict = field(default_factory=dict)  # parameter -> original tensor
    method: str = "gguf"
    group_size: Any = None
    sym: Any = None

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / max(self.weights, 1)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for parameter, original in self.originals.items():
                parameter.copy_(original)
        self.originals = {}

    def __enter__(self) -> "MixReport":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def apply_mix(model: Any, mix: str = "Q4_K_M", progress: bool = False, imatrix: Any = None) -> MixReport:
    """Replace the model's 2-D weights by their GGUF round trip under ``mix``; ``restore()`` undoes it.

    ``imatrix`` (:class:`~qtutor.methods.gguf.imatrix.ImportanceMatrix`) weights the block fits of every tensor
    it covers whose type takes one (Q4_0 ... Q5_1, the K-quants and i-quants: byte-identical with llama.cpp's;
    Q8_0, MXFP4 and the ternary types ignore it, as in ggml). The IQ1/IQ2 mixes and IQ3_XXS need one, as in
    llama.cpp (``mixes.check_imatrix_needed``)."""
    import torch
    from tqdm.auto import tqdm

    mix = mixes.check_mix(mix)
    parameters = {gguf_name(name): p for name, p in model.named_parameters()
                  if gguf_name(name) is not None and p.ndim == 2}
    types = mixes.assign_types(mix, {name: tuple(p.shape) for name, p in parameters.items()}, imatrix is not None)
    mixes.check_imatrix_needed(mix, types, imatrix)
    if imatrix is not None:
        imatrix.check_shapes({name: tuple(p.shape) for name, p in parameters.items()})
    report = MixReport(mix, types)
    try:
        with torch.no_grad():
            for name, parameter in tqdm(parameters.items(), desc=f"gguf {mix}", disable=not progress, leave=False):
                W = parameter.detach().float().cpu().numpy()
                report.originals[parameter] = parameter.detach().clone()
                if types[name] in mixes.FLOAT_TYPES:  # a cast: F32 as it is, F16 / BF16 rounded to nearest even
                    cast = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}[types[name]]
                    W_hat = W if cast == "fp32" else _cast(W, cast)
                    report.nbytes += W.size * (4 if cast == "fp32" else 2)
                else:
                    data = quantize(W, types[name], None if imatrix is None else imatrix.for_tensor(name, types[name]))
                    W_hat = dequantize(data, types[name], W.shape)
                    report.nbytes += data.size
                report.weights += W.size
                parameter.copy_(torch.from_numpy(W_hat).to(parameter.dtype))
    except BaseException:
        report.restore()
        raise
    return report


def _cast(W: np.ndarray, fmt: str) -> np.ndarray:
    from qtutor import formats

    return np.asarray(formats.get(fmt).encode(W).dequantize(), dtype=np.float32)
