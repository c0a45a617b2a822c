"""The decision rule of notebook 15: fits, most bits first, calibration and hardware decide the method."""
from __future__ import annotations

import pytest

from qtutor.eval import advisor


def test_an_8b_model_on_an_8_gb_laptop_gets_q4_k_m_as_the_seeds_recommend():
    """2 GB for the system, a 4,096-token FP16 cache of Llama 3.1 8B's shape (32 layers x 8 KV heads x 128)."""
    advice = advisor.recommend(8e9, memory_gb=8, hardware="cpu", calibration=True)
    assert advice.choice.fmt == "Q4_K_M" and advice.gb <= advice.usable_gb == 6.0
    assert advice.kv_cache_gb == pytest.approx(2 * 32 * 8 * 128 * 4096 * 2 / 1e9)
    q6 = next(row for row in advice.considered if row["label"] == "Q6_K")
    assert not q6["fits"] and 6.0 < q6["gb"] < 8  # it would fit the bare 8 GB, not what the system leaves
    assert advice.within_tolerance
    assert any("KV cache at 4,096 tokens" in reason and "2 of 8 GB kept" in reason for reason in advice.reasons)


def test_the_context_length_and_the_headroom_move_the_choice():
    roomy = advisor.recommend(8e9, memory_gb=16, hardware="cpu")
    long = advisor.recommend(8e9, memory_gb=16, hardware="cpu", context=131072)  # 17 GB of FP16 cache
    assert roomy.choice.fmt == "Q8_0" and long.choice is None and "shorter context" in long.reasons[0]
    assert advisor.recommend(8e9, 16, "cpu", context=65536).choice.bits_per_weight < roomy.choice.bits_per_weight
    assert advisor.recommend(8e9, 8, "cpu", headroom_gb=0, context=0).choice.fmt == "Q6_K"
    assert advisor.recommend(8e9, 8, "cpu", kv_cache_gb=0.0, headroom_gb=0).kv_cache_gb == 0.0
    assert advisor.typical_architecture(7e9) == advisor.ARCHITECTURES[8e9]
    assert advisor.typical_architecture(135e6) == advisor.ARCHITECTURES[1e9]


def test_more_memory_never_buys_fewer_bits():
    for hardware in advisor.HARDWARE:
        bits = []
        for memory in range(2, 200, 2):
            advice = advisor.recommend(13e9, memory_gb=memory, hardware=hardware)
            bits.append(advice.choice.bits_per_weight if advice.choice else 0.0)
        assert bits == sorted(bits), hardware
        assert bits[0] == 0.0 and bits[-1] >= 8.0  # 2 GB holds nothing; 198 GB holds 8-bit or more


def test_hardware_and_calibration_choose_the_method():
    assert advisor.recommend(70e9, 80, "hopper").choice.fmt == "fp8_e4m3"
    assert advisor.recommend(70e9, 80, "ampere").choice.method == "smoothquant"
    assert advisor.recommend(70e9, 48, "ampere", calibration=True).choice.method == "gptq"
    without = advisor.recommend(70e9, 48, "ampere", calibration=False)
    assert without.choice.method == "rtn" and without.choice.fmt == "int4"
    assert any("calibrated method" in reason for reason in without.reasons)
    assert advisor.recommend(70e9, 48, "blackwell").choice.fmt == "nvfp4"
    qlora = advisor.recommend(8e9, 8, "hopper", finetune=True).choice
    assert qlora.fmt == "nf4" and "bitsandbytes" in qlora.label
    assert "AWQ" in advisor.recommend(70e9, 48, "ampere", calibration=True).choice.label  # GPU serving: GPTQ or AWQ
    assert "imatrix" in advisor.recommend(70e9, 40, "cpu", calibration=True).choice.label
    assert "imatrix" not in advisor.recommend(70e9, 40, "cpu", calibration=False).choice.label


def test_a_tolerance_the_memory_cannot_meet_is_said_out_loud():
    advice = advisor.recommend(70e9, 24, "hopper", tolerance_pct=3)
    assert advice.choice.fmt == "int2" and not advice.within_tolerance
    assert any("smaller model" in reason and "(QAT)" in reason for reason in advice.reasons)
    nothing = advisor.recommend(70e9, 8, "cpu")
    assert nothing.choice is None and "Nothing fits" in nothing.reasons[0]


def test_bad_input_says_how_to_fix_it():
    with pytest.raises(ValueError, match="choose one of"):
        advisor.recommend(8e9, 16, hardware="tpu")
    with pytest.raises(ValueError, match="NVIDIA GPU"):
        advisor.recommend(8e9, 16, hardware="cpu", finetune=True)
    with pytest.raises(ValueError, match="positive"):
        advisor.recommend(8e9, 0)
    with pytest.raises(ValueError, match="tolerance"):
        advisor.recommend(8e9, 16, tolerance_pct=-1)
    with pytest.raises(ValueError, match="context"):
        advisor.recommend(8e9, 16, context=-1)
    with pytest.raises(ValueError, match="headroom_gb"):
        advisor.recommend(8e9, 4, headroom_gb=-1)


def test_evidence_is_the_same_method_and_format_or_a_labelled_proxy():
    rows = [{"method": "rtn", "format": "int4", "delta_pct": 5.0}, {"method": "gptq", "format": "int4",
                                                                     "delta_pct": 2.0}]
    gptq = advisor.recommend(70e9, 48, "ampere", calibration=True).choice
    assert advisor.evidence(rows, gptq)["delta_pct"] == 2.0
    smooth = advisor.recommend(70e9, 80, "ampere").choice  # SmoothQuant INT8: not measured here
    assert advisor.evidence(rows, smooth) is None
    rows.append({"method": "rtn", "format": "int8", "delta_pct": 0.1})
    assert advisor.evidence(rows, smooth)["proxy"] is True
