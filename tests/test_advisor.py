"""The decision rule of notebook 15: fits, most bits first, calibration and hardware decide the method."""
from __future__ import annotations

import pytest

from qtutor.eval import advisor


def test_an_8b_model_on_an_8_gb_laptop_gets_the_largest_gguf_mix_that_fits():
    advice = advisor.recommend(8e9, memory_gb=8, hardware="cpu", calibration=True)
    assert advice.choice.fmt == "Q6_K" and advice.gb <= 8
    q8 = next(row for row in advice.considered if row["label"] == "Q8_0")
    assert not q8["fits"] and q8["gb"] > 8  # the one with more bits was tried first and did not fit
    assert advice.within_tolerance


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
    assert advisor.recommend(8e9, 8, "hopper", finetune=True).choice.fmt == "nf4"
    assert "imatrix" in advisor.recommend(70e9, 40, "cpu", calibration=True).choice.label
    assert "imatrix" not in advisor.recommend(70e9, 40, "cpu", calibration=False).choice.label


def test_a_tolerance_the_memory_cannot_meet_is_said_out_loud():
    advice = advisor.recommend(70e9, 24, "hopper", tolerance_pct=3)
    assert advice.choice.fmt == "int2" and not advice.within_tolerance
    assert any("smaller model" in reason for reason in advice.reasons)
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


def test_evidence_is_the_same_method_and_format_or_a_labelled_proxy():
    rows = [{"method": "rtn", "format": "int4", "delta_pct": 5.0}, {"method": "gptq", "format": "int4",
                                                                     "delta_pct": 2.0}]
    gptq = advisor.recommend(70e9, 48, "ampere", calibration=True).choice
    assert advisor.evidence(rows, gptq)["delta_pct"] == 2.0
    smooth = advisor.recommend(70e9, 80, "ampere").choice  # SmoothQuant INT8: not measured here
    assert advisor.evidence(rows, smooth) is None
    rows.append({"method": "rtn", "format": "int8", "delta_pct": 0.1})
    assert advisor.evidence(rows, smooth)["proxy"] is True
