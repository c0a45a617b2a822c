"""The SmolLM2 card's measurements ship as data (qtutor/zoo/smollm2_measurements.json) beside the card that
prints them; both are written by tools/model_card_smollm2.py, so they must say the same thing."""
import re

import pytest

from qtutor import zoo


def test_an_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: smollm2"):
        zoo.measurements("llama-70b")


def test_the_card_prints_the_measurements_it_ships():
    card = zoo.measurements("smollm2")
    text = (zoo.HERE / "MODEL_CARD_SMOLLM2.md").read_text()
    float_point = card["float"]
    assert f"**{float_point['ppl']:.2f} ± {float_point['ppl_stderr']:.2f}**" in text
    rows = card["rtn"] + card["calibrated"] + card["gguf"] + [card["llm_int8"]]
    for row in rows:  # every variant's line in the card carries the stored perplexity and its error
        assert re.search(rf"\| {re.escape(row['label'])} \| [^|]+ \| {row['ppl']:.2f} ± {row['ppl_stderr']:.2f} \|", text)
        assert row["tokens"] == rows[0]["tokens"] and row["ppl_stderr"] > 0


def test_the_layer_errors_cover_every_linear_of_smollm2_for_every_method_and_setting():
    data = zoo.layer_errors("smollm2")
    assert len(data["layers"]) == 210 and data["methods"] == ["RTN", "GPTQ", "AWQ"]
    for setting in data["settings"]:
        for method in data["methods"]:
            errors = data["errors"][setting][method]
            assert set(errors) == set(data["layers"]) and all(0 < e < 1 for e in errors.values())
    int3, int4 = data["errors"]["INT3 g64"]["RTN"], data["errors"]["INT4 g64"]["RTN"]
    assert all(int3[name] > int4[name] for name in int3)  # one bit fewer never rounds a layer better
    with pytest.raises(ValueError, match="known: smollm2"):
        zoo.layer_errors("tiny")
