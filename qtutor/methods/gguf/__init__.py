"""GGUF / llama.cpp quantization as a method: the K-quant mixes, .gguf files, and reading them.

ggml's block types themselves (Q4_0 ... Q8_0, MXFP4, Q2_K ... Q6_K, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0) are number
formats, :mod:`qtutor.formats.ggml` (``qt.formats.get("Q4_K")``); their functions are re-exported here:

    data = gguf.quantize(W, "Q4_K")          # uint8 (rows, bytes per row): exactly the bytes llama.cpp stores
    W_hat = gguf.dequantize(data, "Q4_K")    # float32 (rows, cols)
    q = gguf.quantize_tensor(W, "Q4_K")      # a QuantizedTensor (codes = those bytes) for the rest of qtutor

Files: ``mixes`` (Q4_K_M and friends: which tensor gets which type), ``apply`` (a mix on a model), ``export``
(writing a .gguf file llama.cpp can run), ``reader`` (reading one), ``anatomy`` (the bytes of one block).
A tensor whose rows are not a multiple of a K-quant's 256 weights gets a legacy type in a mix
(``mixes.FALLBACK``), as llama.cpp does.
"""
from __future__ import annotations

from qtutor.formats.ggml import (TYPES, block_info, check_type, dequantize, importance_matrix, quantize,
                                 quantize_tensor, type_names)
from qtutor.methods import Method
from qtutor.methods.gguf.mixes import check_mix

# As a method of a whole model, GGUF is a replacement: ``fmt`` names a mix (Q4_K_M ...) that gives each tensor its
# block type, and every weight, the tied embedding too, becomes what its blocks decode to (qtutor.model.phases)
METHOD = Method("gguf", replace="gguf_mix", check_fmt=check_mix)

__all__ = ["TYPES", "block_info", "check_type", "dequantize", "importance_matrix", "quantize", "quantize_tensor",
           "type_names"]
