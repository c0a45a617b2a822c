"""The compressed-tensors export, checked by compressed-tensors itself and by transformers' loader.

The oracle is the reader: the ``compressed-tensors`` package (the one vLLM and transformers use) validates the
config, its compressors decode every stored layer, and ``AutoModelForCausalLM.from_pretrained`` loads the
directory and is scored against qtutor's own fake-quant model.
"""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

import qtutor as qt
from qtutor.model import find_layer, get_weight, linear_layers
from qtutor.model.activations import quantized_inputs
from qtutor.model.export_compressed import SCHEMES, dense_pack_int32, export_compressed_tensors, unpack_dense_int32

torch = pytest.importorskip("torch")
ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402

PPL_TOKENS = 2048


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("cols", [32, 40, 256])
def test_dense_packing_is_compressed_tensors_own(bits, cols):
    rng = np.random.default_rng(bits * 1000 + cols)
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(5, cols))
    ours = dense_pack_int32(codes, bits)
    theirs = pack_to_int32(torch.from_numpy(codes.astype(np.int8)), bits).numpy()
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(unpack_dense_int32(ours, bits, cols), codes)


def _export(tmp_path, scheme, method="rtn", **kw):
    model, tok = qt.load_model("tiny")
    calib = qt.data.calibration(8, 128)
    summary = export_compressed_tensors(model, tok, tmp_path / scheme, scheme, method=method, calib=calib,
                                        progress=False, **kw)
    return model, tok, summary


def _stored(out_dir):
    from safetensors.torch import load_file

    config = json.loads((out_dir / "config.json").read_text())
    return config, load_file(str(out_dir / "model.safetensors"))


CASES = [("W4A16", "rtn"), ("W4A16", "gptq"), ("W4A16", "awq"), ("W8A16", "rtn"), ("FP8", "rtn"), ("FP8_DYNAMIC", "rtn"),
         ("NVFP4A16", "rtn"), ("NVFP4A16", "gptq")]


@pytest.mark.parametrize("scheme,method", CASES)
def test_compressed_tensors_decodes_every_layer_to_our_weights(tmp_path, scheme, method):
    model, _, summary = _export(tmp_path, scheme, method)
    config, stored = _stored(tmp_path / scheme)
    parsed = QuantizationConfig.model_validate(config["quantization_config"])
    ct_scheme = parsed.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(parsed.format)
    assert parsed.format == SCHEMES[scheme].layout and summary["layers"] == 42
    assert parsed.ignore == ["lm_head"] and "lm_head.weight" not in stored  # tied to the embedding
    for layer in linear_layers(model):
        if layer.role == "lm_head":
            continue
        prefix = layer.name + "."
        local = {key[len(prefix):]: value for key, value in stored.items() if key.startswith(prefix)}
        assert "weight" not in local or local["weight"].dtype == torch.float8_e4m3fn
        decoded = compressor.decompress(local, ct_scheme)["weight"]
        ours = torch.from_numpy(np.asarray(get_weight(find_layer(model, layer.name))))
        if scheme == "NVFP4A16":  # compressed-tensors decodes NVFP4 in bfloat16; the codes and scales are ours
            assert decoded.dtype == torch.bfloat16
            ours = ours.to(torch.bfloat16)
        assert torch.equal(decoded, ours), layer.name
    if SCHEMES[scheme].activations == "static":
        scale = stored["model.layers.0.self_attn.q_proj.input_scale"]
        assert scale.shape == (1,) and float(scale) == pytest.approx(
            summary["input_scales"]["model.layers.0.self_attn.q_proj"], rel=0)


@pytest.mark.parametrize("scheme", ["W4A16", "W8A16", "FP8", "FP8_DYNAMIC", "NVFP4A16"])
def test_transformers_loads_the_directory_and_scores_as_qtutor_does(tmp_path, scheme):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model, tok, summary = _export(tmp_path, scheme)
    chosen = SCHEMES[scheme]
    if chosen.activations is None:
        rounding = contextlib.nullcontext()
    else:
        rounding = quantized_inputs(model, "fp8_e4m3", chosen.activations, scales=summary["input_scales"] or None)
    with rounding:
        ours = qt.perplexity(model, tok, max_tokens=PPL_TOKENS, progress=False)
    loader = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if chosen.fmt == "nvfp4" else {}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / scheme, **loader)
    theirs = qt.perplexity(loaded, tok, max_tokens=PPL_TOKENS, progress=False)
    summary["report"].restore()
    floating = qt.perplexity(model, tok, max_tokens=PPL_TOKENS, progress=False)
    assert abs(theirs / ours - 1) < 0.005
    assert ours != floating  # the quantization is in both, not in neither


def test_fp8_input_rounding_is_part_of_the_checkpoint(tmp_path):
    """Loaded as written, FP8 rounds each input with its stored scale; the weights alone score otherwise."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    model, tok, summary = _export(tmp_path, "FP8")
    with quantized_inputs(model, "fp8_e4m3", "static", scales=summary["input_scales"]):
        with_inputs = qt.perplexity(model, tok, max_tokens=PPL_TOKENS, progress=False)
    weights_only = qt.perplexity(model, tok, max_tokens=PPL_TOKENS, progress=False)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "FP8")
    assert qt.perplexity(loaded, tok, max_tokens=PPL_TOKENS, progress=False) == pytest.approx(with_inputs, rel=1e-4)
    dequantized = AutoModelForCausalLM.from_pretrained(
        tmp_path / "FP8", quantization_config=CompressedTensorsConfig(dequantize=True))
    assert qt.perplexity(dequantized, tok, max_tokens=PPL_TOKENS, progress=False) == pytest.approx(weights_only,
                                                                                                   rel=1e-4)
    assert with_inputs != weights_only


# ---- bad input: a clear error and nothing written ----------------------------------------------------------
@pytest.mark.parametrize("scheme,needle", [("NVFP4", "W4A4"), ("W4A16_ASYM", "zero points"), ("W8A8", "W8A16"),
                                           ("int4", "unknown scheme")])
def test_schemes_not_written_say_why(tmp_path, scheme, needle):
    model, tok = qt.load_model("tiny")
    with pytest.raises(ValueError, match=needle):
        export_compressed_tensors(model, tok, tmp_path / "out", scheme, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # AffineQuant's one-step learning warns that it kept its start
@pytest.mark.parametrize("method,options", [("hqq", {}), ("quip_sharp", {}), ("mr_gptq", {}), ("rotation", {}),
                                            ("llm_int8", {}), ("affinequant", {"ln_matrix": True, "epochs": 2, "steps": 1})])
def test_methods_the_layout_cannot_express_are_refused(tmp_path, method, options):
    model, tok = qt.load_model("tiny")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    scheme = "NVFP4A16" if method == "mr_gptq" else "W4A16"
    with pytest.raises(ValueError, match="cannot|changes how the model runs"):
        export_compressed_tensors(model, tok, tmp_path / "out", scheme, method=method,
                                  calib=qt.data.calibration(4, 128), progress=False, **options)
    assert not (tmp_path / "out").exists()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # the model is restored


def test_an_existing_checkpoint_is_never_overwritten(tmp_path):
    model, tok = qt.load_model("tiny")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export_compressed_tensors(model, tok, tmp_path / "out", "W4A16", progress=False)
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


def test_group_sizes_that_do_not_divide_the_rows_and_fp8_without_calibration(tmp_path):
    model, tok = qt.load_model("tiny")
    with pytest.raises(ValueError, match="does not divide the row length 256"):
        export_compressed_tensors(model, tok, tmp_path / "a", "W4A16", group_size=96, progress=False)
    with pytest.raises(ValueError, match="calibrated scale"):
        export_compressed_tensors(model, tok, tmp_path / "b", "FP8", progress=False)
    with pytest.raises(ValueError, match="fixes its granularity"):
        export_compressed_tensors(model, tok, tmp_path / "c", "W8A16", group_size=64, progress=False)
    assert not any(tmp_path.iterdir())
