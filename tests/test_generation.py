"""Greedy generation side by side on the tiny model: deterministic, weights restored, INT8 holds on where INT2
breaks, bad input refused with a clear message; and the GenerationComparison widget headless."""
from __future__ import annotations

import pytest

import qtutor as qt
from qtutor.eval import generation

NEW_TOKENS = 20
VARIANTS = [{"label": "FP32", "method": None},
            {"label": "INT8 per channel", "method": "rtn", "fmt": "int8", "group_size": -1},
            {"label": "INT2 g128", "method": "rtn", "fmt": "int2", "group_size": 128}]


@pytest.fixture(scope="module")
def prompt():
    return qt.data.text("test")[:200]  # 60 tokens of the corpus: the tiny model is on home ground


@pytest.fixture(scope="module")
def measured(tiny, prompt):
    """Float greedy text before and after a side_by_side run, and that run's rows (labels -> row)."""
    model, tokenizer = tiny
    before = generation.greedy(model, tokenizer, prompt, NEW_TOKENS)
    rows = generation.side_by_side(model, tokenizer, prompt, VARIANTS, NEW_TOKENS, progress=False)
    after = generation.greedy(model, tokenizer, prompt, NEW_TOKENS)
    return before, {row["label"]: row for row in rows}, after


def test_greedy_is_the_argmax_loop_and_deterministic(tiny, prompt):
    import torch

    model, tokenizer = tiny
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    expected = []
    with torch.no_grad():  # the definition, without generate's KV cache: append argmax of the last logits
        for _ in range(5):
            expected.append(int(model(input_ids=ids, use_cache=False).logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([expected[-1:]])], dim=1)
    assert generation.greedy_tokens(model, tokenizer, prompt, 5) == expected
    assert generation.greedy(model, tokenizer, prompt, 5) == tokenizer.decode(expected)


def test_side_by_side_restores_the_float_weights(measured):
    before, rows, after = measured
    assert before == after == rows["FP32"]["text"]  # greedy is deterministic, and quantization was undone
    assert rows["FP32"]["same_tokens_as_float"] == len(rows["FP32"]["tokens"]) == NEW_TOKENS
    assert rows["FP32"]["bits_per_weight"] == 32.0


def test_int8_keeps_to_float_longer_than_int2(measured):
    _, rows, _ = measured
    int8, int2 = rows["INT8 per channel"], rows["INT2 g128"]
    # measured: INT8 per channel all 20 tokens, INT2 g128 1 (its second token flips)
    assert int8["same_tokens_as_float"] >= 10
    assert int2["same_tokens_as_float"] < min(10, int8["same_tokens_as_float"])
    assert int2["text"] != rows["FP32"]["text"]
    assert 8.0 < int8["bits_per_weight"] < 8.2 and 2.0 < int2["bits_per_weight"] < 2.3  # + scales and zeros
    assert list(rows) == [v["label"] for v in VARIANTS]


def test_leading_agreement_counts_up_to_the_first_difference():
    assert generation.leading_agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert generation.leading_agreement([5], [6]) == 0
    assert generation.leading_agreement([1, 2], [1, 2, 3]) == 2  # one ended early: agreement up to its end


def test_bad_input_raises_clear_errors(tiny):
    model, tokenizer = tiny
    long_prompt = qt.data.text("test")[:3000]
    length = len(tokenizer(long_prompt)["input_ids"])
    assert length > 512
    with pytest.raises(ValueError, match=rf"prompt is {length} tokens long; with max_new_tokens=40 it may be at most "
                                         r"472 tokens \(the model's context is 512"):
        generation.greedy(model, tokenizer, long_prompt, 40)
    with pytest.raises(ValueError, match="prompt is empty"):
        generation.greedy(model, tokenizer, "", 5)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=rf"max_new_tokens={bad}: generate at least one token"):
            generation.greedy(model, tokenizer, "The city", bad)
    with pytest.raises(TypeError, match="prompt must be a string"):
        generation.greedy(model, tokenizer, ["The city"], 5)
    with pytest.raises(ValueError, match="unknown keys \\['bits'\\]"):
        generation.side_by_side(model, tokenizer, "The city", [{"method": "rtn", "bits": 4}], 1, progress=False)
    with pytest.raises(ValueError, match="unknown method 'rnt'"):
        generation.side_by_side(model, tokenizer, "The city", [{"method": "rnt", "fmt": "int4"}], 1,
                                progress=False)
    with pytest.raises(ValueError, match="gptq needs calibration data"):
        generation.side_by_side(model, tokenizer, "The city", [{"method": "gptq", "fmt": "int4"}], 1,
                                progress=False)


# ------------------------------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def widgets():
    pytest.importorskip("ipywidgets")
    from qtutor.viz import widgets

    return widgets


def test_generation_comparison_computes_the_selected_rows_and_caches_them(tiny, prompt, widgets, monkeypatch):
    model, tokenizer = tiny
    calls = []
    real = generation.side_by_side
    monkeypatch.setattr(generation, "side_by_side",
                        lambda *args, **kw: calls.append([v["label"] for v in args[3]]) or real(*args, **kw))
    variants = [VARIANTS[0], {"label": "INT4 g128", "method": "rtn", "fmt": "int4", "group_size": 128}]
    app = widgets.GenerationComparison(model, tokenizer, prompt=prompt, variants=variants, max_new_tokens=8)
    assert app.state == {} and calls == []  # nothing runs before Generate
    app.generate()
    assert [row["label"] for row in app.state["rows"]] == ["FP32", "INT4 g128"] and calls == [["FP32", "INT4 g128"]]
    float_row = app.state["rows"][0]
    assert float_row["text"] == generation.greedy(model, tokenizer, prompt, 8)
    assert "INT4 g128" in app.output.value and "same tokens as float: FP32 8" in app.summary.value
    app.controls["variants"].value = ("INT4 g128",)
    rows = app.compute(**app.settings())
    assert [row["label"] for row in rows] == ["INT4 g128"] and len(calls) == 1  # from the cache
    app.controls["max_new_tokens"].value = 4  # a new setting: generated (float again, as the reference)
    app.generate()
    assert calls[-1] == ["INT4 g128"] and len(app.state["rows"][0]["tokens"]) == 4
    for row in app.state["rows"] + [float_row]:
        same, rest = widgets.split_at_divergence(tokenizer, row)
        assert same + rest == row["text"]
    assert widgets.split_at_divergence(tokenizer, float_row)[1] == ""


def test_generation_comparison_highlights_after_the_first_different_token(tiny, widgets):
    _, tokenizer = tiny
    ids = tokenizer(" the city of the river", add_special_tokens=False)["input_ids"]
    row = {"label": "x", "text": tokenizer.decode(ids), "tokens": ids, "same_tokens_as_float": 2,
           "bits_per_weight": 4.0}
    same, rest = widgets.split_at_divergence(tokenizer, row)
    assert same == tokenizer.decode(ids[:2]) and rest == tokenizer.decode(ids)[len(same):] and rest
    html = widgets.generation_html("<prompt>", [row], tokenizer)
    assert "&lt;prompt&gt;" in html and f">{rest}</span>" in html


def test_generation_comparison_shows_a_message_for_a_prompt_too_long(tiny, widgets):
    model, tokenizer = tiny
    app = widgets.GenerationComparison(model, tokenizer, prompt=qt.data.text("test")[:3000],
                                       variants=VARIANTS[:1], max_new_tokens=10)
    app.button.click()  # what a student does; no traceback
    assert "the model's context is 512" in app.state["error"] and "context is 512" in app.message.value
    assert app.output.value == ""
    app.controls["variants"].value = ()
    app.generate()
    assert "no variant selected" in app.message.value
