"""The i-quant and ternary mixes (IQ1_S ... IQ4_XS, TQ1_0, TQ2_0): llama.cpp's per-tensor rules
(src/llama-quant.cpp at 007dbbf3, dense models), the fallbacks for rows that are not multiples of 256, and
llama-quantize's refusal to make IQ1/IQ2/IQ3_XXS tensors without an importance matrix."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor.eval.footprint import LLAMA_SHAPES, llama_tensor_shapes
from qtutor.methods.gguf import mixes

SEVEN_B = llama_tensor_shapes(**LLAMA_SHAPES["7B"])  # 32 layers, n_gqa 1
GQA_8 = llama_tensor_shapes(**LLAMA_SHAPES["70B"])  # 80 layers, 8 query heads per K/V head


def kinds(types: dict[str, str], layer: int) -> dict[str, str]:
    return {kind: types[f"blk.{layer}.{kind}.weight"]
            for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}


@pytest.mark.parametrize("mix,first,middle,output", [
    # the first eighth of the layers (ffn_down's rule) and a middle layer, as llama_tensor_get_type_impl gives them
    ("IQ2_XXS", dict(attn_v="Q2_K", ffn_down="Q2_K", attn_q="IQ2_XXS", attn_output="IQ2_XXS"),
     dict(attn_v="Q2_K", ffn_down="IQ2_XXS"), "Q5_K"),
    ("IQ2_XS", dict(attn_v="Q2_K", ffn_down="Q2_K", attn_q="IQ2_XS"), dict(ffn_down="IQ2_XS"), "Q5_K"),
    ("IQ2_S", dict(attn_v="IQ3_S", ffn_down="IQ3_S", attn_output="IQ3_S", attn_q="IQ2_XS"),
     dict(ffn_down="IQ2_XS", ffn_up="IQ2_XS"), "Q5_K"),
    ("IQ2_M", dict(attn_v="IQ3_S", ffn_down="IQ3_S", attn_q="IQ2_S"), dict(ffn_down="IQ2_S"), "Q5_K"),
    ("IQ1_S", dict(attn_v="Q2_K", ffn_down="Q2_K", attn_output="IQ2_XXS", attn_q="IQ1_S"),
     dict(ffn_down="IQ1_S", ffn_gate="IQ1_S"), "Q5_K"),
    ("IQ1_M", dict(attn_output="IQ2_XXS", attn_q="IQ1_M"), dict(ffn_down="IQ1_M"), "Q5_K"),
    ("IQ3_XXS", dict(attn_v="IQ3_XXS", attn_q="IQ2_S", attn_k="IQ2_S", attn_output="IQ3_S", ffn_down="IQ3_XXS"),
     dict(ffn_up="IQ3_XXS"), "Q5_K"),
    ("IQ3_XS", dict(attn_q="IQ3_XXS", attn_k="IQ3_XXS", ffn_up="IQ3_S", attn_v="IQ3_S"),
     dict(ffn_up="IQ3_XXS", ffn_gate="IQ3_XXS", ffn_down="IQ3_S"), "Q6_K"),
    ("IQ3_S", dict(attn_v="IQ3_S", ffn_down="IQ3_S"), dict(attn_q="IQ3_S"), "Q6_K"),
    ("IQ3_M", dict(attn_v="Q4_K", ffn_down="Q4_K", attn_output="Q4_K", attn_q="IQ3_S"),
     dict(attn_v="Q4_K", ffn_down="IQ3_S"), "Q6_K"),
    ("IQ4_XS", dict(ffn_down="IQ4_XS", attn_v="IQ4_XS"), dict(attn_q="IQ4_XS"), "Q6_K"),
    ("IQ4_NL", dict(attn_v="IQ4_NL"), dict(ffn_down="IQ4_NL"), "Q6_K"),
    ("TQ1_0", dict(attn_v="TQ1_0", ffn_down="TQ1_0"), dict(attn_q="TQ1_0"), "Q6_K"),
])
def test_each_tensor_gets_llama_cpp_s_type_with_an_importance_matrix(mix, first, middle, output):
    types = mixes.assign_types(mix, SEVEN_B, imatrix=True)
    assert {k: v for k, v in kinds(types, 0).items() if k in first} == first
    assert {k: v for k, v in kinds(types, 16).items() if k in middle} == middle
    assert types["output.weight"] == output
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["token_embd.weight"] == {"IQ2_XXS": "Q2_K", "IQ2_XS": "Q2_K", "IQ1_S": "Q2_K", "IQ1_M": "Q2_K",
                                          "IQ2_S": "IQ3_S", "IQ2_M": "IQ3_S", "IQ3_XXS": "IQ3_S",
                                          "TQ1_0": "Q4_K"}.get(mix, mixes.FTYPES[mix][0])


def test_rules_that_depend_on_the_importance_matrix_and_on_shared_kv_heads():
    plain = kinds(mixes.assign_types("IQ3_XXS", SEVEN_B), 0)
    assert plain["attn_v"] == "IQ3_S" and plain["ffn_down"] == "Q4_K"  # without one: safer types
    assert kinds(mixes.assign_types("IQ3_XXS", SEVEN_B), 16)["ffn_down"] == "Q3_K"
    assert kinds(mixes.assign_types("IQ4_XS", SEVEN_B), 0)["ffn_down"] == "Q5_K"
    assert kinds(mixes.assign_types("Q4_0", SEVEN_B, imatrix=True), 0)["ffn_down"] == "Q4_1"
    assert kinds(mixes.assign_types("Q4_0", SEVEN_B), 0)["ffn_down"] == "Q4_0"
    assert mixes.query_heads_per_kv_head(GQA_8) == 8 and mixes.query_heads_per_kv_head(SEVEN_B) == 1
    for mix, attn_v in (("IQ2_XXS", "Q4_K"), ("IQ2_M", "Q4_K"), ("IQ3_XXS", "Q4_K"), ("IQ3_S", "Q4_K"),
                        ("IQ4_NL", "Q5_K"), ("Q2_K", "Q4_K")):
        assert mixes.assign_types(mix, GQA_8, imatrix=True)["blk.40.attn_v.weight"] == attn_v, mix


def test_rows_that_are_not_multiples_of_256_fall_back_as_in_llama_cpp():
    shapes = {"blk.0.attn_q.weight": (64, 576), "blk.0.attn_k.weight": (64, 576), "blk.0.ffn_down.weight": (576, 40),
              "output.weight": (100, 576)}
    for mix in ("IQ1_S", "IQ2_XXS", "IQ2_XS", "IQ2_M", "IQ3_XXS", "IQ3_S", "IQ4_XS"):
        types = mixes.assign_types(mix, shapes, imatrix=True)
        assert types["blk.0.attn_q.weight"] == "IQ4_NL" and types["blk.0.ffn_down.weight"] == "F16", mix
        assert types["output.weight"] == "Q8_0", mix
    assert mixes.assign_types("TQ2_0", shapes)["blk.0.attn_q.weight"] == "Q4_0"
    # IQ4_NL's blocks of 32 fit 576, so the output gets the rule's Q6_K, and then Q6_K's own fallback
    assert mixes.assign_types("IQ4_NL", shapes)["output.weight"] == "Q8_0"
    assert mixes.assign_types("IQ4_NL", {"output.weight": (100, 512)})["output.weight"] == "Q6_K"


def test_iq1_and_iq2_mixes_are_refused_without_an_importance_matrix():
    for mix in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS"):
        types = mixes.assign_types(mix, SEVEN_B)
        assert mixes.needing_imatrix(types), mix
        with pytest.raises(ValueError, match="needs an importance matrix.*qtutor imatrix"):
            mixes.check_imatrix_needed(mix, types, None)
        mixes.check_imatrix_needed(mix, types, object())  # with one: no error
    for mix in ("IQ3_S", "IQ3_M", "IQ4_XS", "IQ4_NL", "TQ1_0", "Q2_K", "Q4_K_M"):
        assert not mixes.needing_imatrix(mixes.assign_types(mix, SEVEN_B)), mix
    # the output and the token embedding never need one
    assert not mixes.needing_imatrix({"output.weight": "IQ2_XXS", "token_embd.weight": "IQ1_S"})


def test_every_mix_has_llama_cpp_s_file_type_id():
    import gguf

    for mix, (_, ftype) in mixes.FTYPES.items():
        name = {"F32": "ALL_F32"}.get(mix, f"MOSTLY_{mix}")
        assert gguf.LlamaFileType[name].value == ftype, mix


def test_apply_mix_refuses_before_changing_the_model():
    import torch

    from qtutor.methods.gguf.apply import apply_mix

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.config = None
    layer = torch.nn.Linear(256, 256, bias=False)
    model.add_module("model", torch.nn.Module())
    model.model.add_module("layers", torch.nn.ModuleList([torch.nn.Module()]))
    model.model.layers[0].add_module("mlp", torch.nn.Module())
    model.model.layers[0].mlp.add_module("up_proj", layer)
    before = layer.weight.detach().clone()
    with pytest.raises(ValueError, match="needs an importance matrix"):
        apply_mix(model, "IQ2_XXS")
    assert torch.equal(layer.weight, before)
    assert np.isfinite(before.numpy()).all()
