"""Write a Llama model to a .gguf file that llama.cpp can load: metadata, tokenizer, quantized tensors.

    summary = export_gguf(model, tokenizer, "tiny-Q4_K_M.gguf", mix="Q4_K_M")

A GGUF file is a header of key/value metadata (architecture hyper-parameters, the tokenizer's vocabulary and
merges), a table of tensors (name, shape, ggml type, offset), then the tensor bytes, each aligned to 32 bytes.
Hugging Face names become GGUF names (``model.layers.3.mlp.down_proj.weight`` -> ``blk.3.ffn_down.weight``).
One trap: Hugging Face's Llama applies rotary embeddings to the two *halves* of each head, llama.cpp to
*adjacent pairs*, so the rows of attn_q and attn_k are permuted (``rope_permute``); without it the file loads
and runs, with a wrong perplexity. Norms stay F32; every other tensor gets the type the mix assigns.
Writing goes through ``gguf.GGUFWriter`` (the gguf package, llama.cpp's own Python writer).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qtutor.formats.ggml import quantize
from qtutor.methods.gguf import mixes

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf_name: str) -> str | None:
    """GGUF tensor name of a Hugging Face Llama parameter (None for parameters GGUF does not store)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        module = ".".join(parts[3:-1])
        if module in HF_TO_GGUF:
            return f"blk.{parts[2]}.{HF_TO_GGUF[module]}.{parts[-1]}"
    return None


def rope_permute(W: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q/k projection from rotate-half order (HF) to interleaved pairs (ggml), head by head."""
    rows, cols = W.shape
    return W.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def model_tensors(model: Any) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array of every stored tensor (q/k rows permuted; a tied output is not repeated)."""
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"export-gguf writes Llama models; this one is {getattr(config, 'model_type', '?')!r}")
    tensors = {}
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, value in state.items():
        name = gguf_name(hf_name)
        if name is None or (tied and name == "output.weight"):
            continue
        array = value.detach().float().cpu().numpy()
        if name.endswith("attn_q.weight"):
            array = rope_permute(array, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            array = rope_permute(array, config.num_key_value_heads)
        tensors[name] = np.ascontiguousarray(array)
    return tensors


def tokenizer_metadata(tokenizer: Any) -> dict:
    """Tokens in id order, their types (1 normal, 3 control), merges "a b", BOS/EOS ids (byte-level BPE)."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend["model"]["type"] != "BPE":
        raise ValueError("export-gguf writes byte-level BPE tokenizers (llama.cpp's 'gpt2' tokenizer model)")
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {added["content"] for added in backend.get("added_tokens", []) if added.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    return {"tokens": tokens, "types": [3 if token in special else 1 for token in tokens], "merges": merges,
            "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 0,
            "eos": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0,
            "pre": _pre_tokenizer_name(backend.get("pre_tokenizer"))}


def _pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how the tokenizer cuts text into words before BPE: "smollm" when
    every digit is cut apart first (SmolLM2's), "default" for GPT-2's rule alone."""
    parts = (pre_tokenizer or {}).get("pretokenizers", [pre_tokenizer or {}])
    digits_apart = any(part.get("type") == "Digits" and part.get("individual_digits") for part in parts)
    return "smollm" if digits_apart else "default"


def export_gguf(model: Any, tokenizer: Any, path: str | Path, mix: str = "Q4_K_M", progress: bool = True,
                imatrix: Any = None) -> dict:
    """Quantize ``model`` with ``mix`` and write ``path``; returns what went where (types, bytes, bits/weight).

    ``imatrix`` (an :class:`~qtutor.methods.gguf.imatrix.ImportanceMatrix` of this model) weights the blocks of
    the types that take one, as ``llama-quantize --imatrix`` does."""
    import gguf
    from tqdm.auto import tqdm

    mix = mixes.check_mix(mix)
    config = model.config
    tensors = model_tensors(model)
    types = mixes.assign_types(mix, {name: array.shape for name, array in tensors.items()}, imatrix is not None)
    mixes.check_imatrix_needed(mix, types, imatrix)
    if imatrix is not None:
        imatrix.check_shapes({name: array.shape for name, array in tensors.items()})
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("qtutor-tiny" if getattr(config, "hidden_size", 0) == 256 else "qtutor-export")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(mixes.FTYPES[mix][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocabulary = tokenizer_metadata(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocabulary["pre"])
    writer.add_token_list(vocabulary["tokens"])
    writer.add_token_types(vocabulary["types"])
    writer.add_token_merges(vocabulary["merges"])
    writer.add_bos_token_id(vocabulary["bos"])
    writer.add_eos_token_id(vocabulary["eos"])
    tensor_bytes = 0
    for name, array in tqdm(tensors.items(), desc=f"export {mix}", disable=not progress, leave=False):
        type_name = types[name]
        if type_name == "F32":
            writer.add_tensor(name, array.astype(np.float32))
            tensor_bytes += array.size * 4
        elif type_name == "F16":
            writer.add_tensor(name, array.astype(np.float16))
            tensor_bytes += array.size * 2
        elif type_name == "BF16":
            from qtutor import formats

            bits = formats.get("bf16").cast(array.astype(np.float32)).astype(np.uint16)  # round to nearest even
            writer.add_tensor(name, bits, raw_shape=array.shape, raw_dtype=gguf.GGMLQuantizationType.BF16)
            tensor_bytes += array.size * 2
        else:
            data = quantize(array, type_name, None if imatrix is None else imatrix.for_tensor(name, type_name))
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[type_name])  # shape from the bytes
            tensor_bytes += data.size
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    weights = sum(array.size for array in tensors.values())
    return {"path": str(path), "mix": mix, "types": types, "counts": mixes.type_counts(types),
            "tensor_bytes": tensor_bytes, "file_bytes": Path(path).stat().st_size,
            "bits_per_weight": tensor_bytes * 8 / weights}
