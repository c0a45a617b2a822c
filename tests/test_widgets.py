"""Widgets headless: set control values the way a student would and check the state they compute."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from qtutor.viz import figures, widgets  # noqa: E402


def test_affine_playground_follows_its_controls():
    W = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    app = widgets.AffinePlayground(W, bits=4, sym=True, group_size=-1)
    mse4 = app.state["mse"]
    app.controls["bits"].value = 2
    assert app.state["settings"]["bits"] == 2 and app.state["mse"] > 4 * mse4
    app.controls["group_size"].value = 32
    assert app.state["bits_per_weight"] > 2.0 and app.state["mse"] < widgets.affine_summary(W, 2, True, -1)["mse"]
    for group_size, first in ((0, W.ravel()), (-1, W[0]), (32, W[0, :32])):  # the grid drawn is this group's
        summary = widgets.affine_summary(W, 4, True, group_size)
        assert np.array_equal(summary["first_group"], first)
        assert np.abs(first).max() == pytest.approx(np.abs(summary["grid_first_group"]).max(), rel=1e-3)  # fp16 scale


def test_format_explorer_places_a_number_on_the_grid():
    app = widgets.FormatExplorer(name="fp8_e4m3", value=0.3)
    assert app.state["stored"] == pytest.approx(0.3125) and app.state["bits"][0] == 0
    app.controls["value"].value = 1000.0  # beyond E4M3's 448: saturates
    assert app.state["stored"] == 448.0
    app.controls["name"].value = "fp4_e2m1"
    assert app.state["stored"] == 6.0 and app.state["levels"] == 15


def test_format_explorer_shows_fp16_overflowing_where_bf16_keeps_the_range_and_bf16_losing_digits():
    app = widgets.FormatExplorer(name="fp16", value=70000.0)
    assert "fp16" in app.controls["name"].options and "bf16" in app.controls["name"].options
    assert app.state["stored"] == np.inf and "overflows fp16" in app.summary.value
    app.controls["name"].value = "bf16"
    assert app.state["stored"] == 70144.0 and "overflows" not in app.summary.value
    app.controls["value"].value = 1 / 3
    bf16_error = abs(app.state["error"])
    app.controls["name"].value = "fp16"
    assert abs(app.state["error"]) < bf16_error / 4  # 10 mantissa bits against 7
    shown = widgets.grid_near(app.state["grid"], 1 / 3)
    assert shown.size == 16 and shown.min() < 1 / 3 < shown.max()
    assert np.allclose(np.diff(shown), 2.0 ** -12)  # fp16's spacing in [1/4, 1/2): 2^-2 / 2^10


def correlated_toy_layer(rows: int = 8, columns: int = 16, tokens: int = 256, seed: int = 0):
    """W and inputs X whose features are correlated, as real activations are (notebook 06's toy layer)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((columns, columns)) * 0.6 + np.eye(columns)
    X = (rng.standard_normal((tokens, columns)) @ mixing).astype(np.float32)
    return rng.standard_normal((rows, columns)).astype(np.float32), X


def reference_solver(W, X, bits=3, group_size=-1, act_order=False, damping=1.0, blocksize=4):
    from qtutor import formats
    from qtutor.methods import gptq

    return gptq.GPTQ(W, gptq.Hessian(W.shape[1]).add(X), formats.get(f"int{bits}"), group_size, blocksize=blocksize,
                     percdamp=damping / 100, act_order=act_order)


def test_gptq_stepper_buttons_walk_the_columns():
    W, X = correlated_toy_layer(seed=1)
    app = widgets.GPTQStepper(W, X, bits=3, group_size=-1, blocksize=4)
    app.press("Step")
    assert app.state["last_column"] == 0 and app.state["position"] == 1
    app.press("Block")
    assert app.state["position"] == 4  # the rest of the first block of 4
    app.press("Run")
    assert app.state["done"] and app.state["position"] == 16
    app.press("Reset")
    assert not app.state["done"] and app.state["position"] == 0 and app.state["last_column"] is None


def test_gptq_stepper_step_shows_the_error_and_the_row_of_the_cholesky_factor_that_gptq_step_returns():
    W, X = correlated_toy_layer()
    app = widgets.GPTQStepper(W, X, bits=3, act_order=True, blocksize=4)
    solver = reference_solver(W, X, bits=3, act_order=True)
    for _ in range(6):  # across a block boundary
        app.press("Step")
        step = solver.step()
        assert app.state["last_column"] == step.column
        np.testing.assert_array_equal(app.state["last_error"], step.error)
        np.testing.assert_array_equal(app.state["last_hinv_row"], step.hinv_row)
        assert app.state["last_d"] == step.d
        data = app.figure_data()  # what the figure draws: the update on the columns not yet quantized
        assert list(data["order"]) == list(solver.perm) and data["position"] == solver.position
        np.testing.assert_allclose(data["update"][:, step.position + 1:],
                                   -np.outer(step.error / step.d, step.hinv_row[1:]), rtol=1e-6)
        assert not data["update"][:, :step.position + 1].any()


@pytest.mark.parametrize("settings", [dict(bits=3, group_size=-1, act_order=False),
                                      dict(bits=4, group_size=8, act_order=True, damping=10.0),
                                      dict(bits=2, group_size=4, act_order=False, damping=0.1)])
def test_gptq_stepper_run_reaches_what_gptq_run_returns(settings):
    W, X = correlated_toy_layer()
    app = widgets.GPTQStepper(W, X, blocksize=4, **settings)
    app.press("Step")
    app.press("Run")
    expected = reference_solver(W, X, **settings).run()
    assert app.state["done"]
    np.testing.assert_array_equal(app.solver.result().codes, expected.codes)
    np.testing.assert_allclose(app.solver.result().dequantize(), expected.dequantize(), rtol=0, atol=0)


def test_gptq_stepper_running_loss_ends_below_rtn_on_a_correlated_layer():
    from qtutor import formats
    from qtutor.eval.layer_error import layer_loss, running_rtn_loss

    W, X = correlated_toy_layer()
    app = widgets.GPTQStepper(W, X, bits=3, blocksize=4)
    app.press("Run")
    H = app.hessian.H
    assert app.state["gptq_loss"] == pytest.approx(layer_loss(W, app.solver.result().dequantize(), H), rel=1e-6)
    rounded = formats.get("int3").encode(W, group_size=-1).dequantize()
    assert app.state["rtn_loss"] == pytest.approx(layer_loss(W, rounded, H), rel=1e-6)
    assert app.state["rtn_loss"] == pytest.approx(running_rtn_loss(W, H, formats.get("int3"))[-1])
    assert app.state["gptq_loss"] < 0.9 * app.state["rtn_loss"]
    assert len(app.history) == 16 and app.history[-1] == app.state["gptq_loss"]


def test_gptq_stepper_controls_rebuild_the_solver_and_replay_it():
    W, X = correlated_toy_layer()
    app = widgets.GPTQStepper(W, X, bits=3, blocksize=4)
    app.press("Run")
    codes3 = app.state["codes"]
    app.controls["bits"].value = 4
    assert app.solver.fmt.bits == 4 and app.state["settings"]["bits"] == 4 and app.state["done"]
    assert not np.array_equal(app.state["codes"], codes3) and np.abs(app.state["codes"]).max() > 3  # INT4 uses +-7
    app.press("Reset")
    app.press("Step", times=3)
    app.controls["group_size"].value = "8"
    assert app.solver.group_size == 8 and app.state["position"] == 3  # replayed to the same column
    app.controls["act_order"].value = True
    assert app.solver.act_order and list(app.solver.perm) != list(range(16))
    assert app.state["last_column"] == int(app.solver.perm[2])
    app.controls["damping"].value = 10.0
    assert app.solver.percdamp == pytest.approx(0.1) and app.state["settings"]["damping"] == 10.0
    app.controls["group_size"].value = "per channel"
    assert app.solver.group_size == -1 and app.message.value == ""


def test_gptq_stepper_bad_controls_show_a_message_and_keep_the_previous_state():
    W, X = correlated_toy_layer()
    app = widgets.GPTQStepper(W, X, bits=3, group_size=8, blocksize=4)
    for _ in range(5):
        app.press("Step")
    solver, state = app.solver, dict(app.state)
    for control, value, words in (("group_size", "5", "does not divide the 16 columns"),
                                  ("group_size", "six", "not a number"),
                                  ("damping", 0.0, "is not positive"), ("damping", -1.0, "is not positive")):
        app.controls[control].value = value
        assert words in app.message.value and words in app.state["error"]
        assert app.solver is solver and app.state["position"] == state["position"] == 5
        assert app.state["settings"] == state["settings"]
        np.testing.assert_array_equal(app.state["codes"], state["codes"])
        app.controls[control].value = {"group_size": "8", "damping": 1.0}[control]  # a good value again
        assert app.message.value == "" and "error" not in app.state and app.state["position"] == 5
        np.testing.assert_array_equal(app.state["codes"], state["codes"])  # the same settings, replayed
        solver = app.solver
    assert not app.configure(bits=9) and "out of range" in app.message.value and app.solver.fmt.bits == 3
    app.press("Step")  # the buttons still work after a refused setting
    assert app.state["position"] == 6


@pytest.mark.parametrize("bad, words", [(dict(group_size=5), "does not divide"), (dict(damping=0), "is not positive"),
                                        (dict(bits=9), "out of range"), (dict(bits=1), "out of range")])
def test_gptq_stepper_built_with_bad_arguments_raises_a_clear_value_error(bad, words):
    W, X = correlated_toy_layer()
    with pytest.raises(ValueError, match=words):
        widgets.GPTQStepper(W, X, **{"bits": 3, **bad})


def test_gptq_stepper_figure_is_readable_on_a_projector():
    W, X = correlated_toy_layer()
    for shape, numbers in (((8, 16), True), ((32, 64), False)):
        rows, columns = shape
        W, X = correlated_toy_layer(rows, columns)
        app = widgets.GPTQStepper(W, X, bits=3, blocksize=4)
        app.press("Step")
        figure = widgets.figures.gptq_step(**app.figure_data())
        width, height = figure.get_size_inches() * 80  # the notebooks' dpi
        assert width <= 1100 and height <= 2000  # unscaled in JupyterLab's output area of a 1280-px window
        texts = [t for t in figure.findobj(matplotlib.text.Text) if t.get_text()]
        assert min(t.get_fontsize() for t in texts) >= 10
        cell_numbers = [t for t in figure.axes[0].texts]
        assert bool(cell_numbers) == numbers and (not numbers or len(cell_numbers) == rows * columns)
        matplotlib.pyplot.close(figure)


def test_gptq_stepper_on_a_slice_of_the_tiny_model_uses_the_slices_real_hessian():
    import qtutor as qt
    from qtutor.methods import gptq

    model, _ = qt.load_model("tiny")
    calib = qt.data.calibration(n_samples=2, seq_len=64)
    layer = "model.layers.1.self_attn.o_proj"
    app = widgets.GPTQStepper.from_layer(model, layer, calib, rows=32, cols=64, row_start=8, col_start=64)
    W = qt.model.get_weight(qt.model.find_layer(model, layer))
    np.testing.assert_array_equal(app.W, W[8:40, 64:128])
    X = qt.model.capture_inputs(model, calib, [layer])[layer]
    np.testing.assert_allclose(app.hessian.H, gptq.hessian(X[:, 64:128]), rtol=1e-5, atol=1e-8)
    assert app.hessian.n_tokens == 128 and app.solver.blocksize == 16
    assert 16 in app.group_sizes(64) and "32" in app.group_choices
    app.press("Step")
    assert app.state["position"] == 1 and app.state["last_error"].shape == (32,)
    app.press("Run")
    assert app.state["done"] and np.isfinite(app.state["gptq_loss"])
    with pytest.raises(ValueError, match="do not fit"):
        widgets.GPTQStepper.from_layer(model, layer, calib, cols=64, col_start=200)


def test_block_anatomy_rebuilds_the_chosen_weight():
    from qtutor.methods import gguf

    row = np.random.default_rng(2).standard_normal(256).astype(np.float32)
    app = widgets.BlockAnatomy(row, "Q4_K", index=70)
    decoded = gguf.dequantize(gguf.quantize(row[None], "Q4_K"), "Q4_K")[0]
    assert app.state["value"] == decoded[70] and app.state["sub_block"] == 2
    assert len(app.state["roles"]) == 144 and app.state["roles"].count("quants") == 128
    app.controls["type_name"].value = "Q4_0"  # 32-weight blocks: the index is clamped into the block
    assert app.state["weight"] == 31 and len(app.state["bytes"]) == 18


def test_perplexity_table_slides_through_the_measured_variants():
    rows = [{"format": f, "group": g, "ppl": ppl, "bits_per_weight": b}
            for f, g, ppl, b in [("int4", "g128", 110.0, 4.16), ("int4", "channel", 120.0, 4.0),
                                 ("int8", "channel", 100.1, 8.0)]]
    app = widgets.PerplexityTable(rows, reference=100.0)
    assert app.state["row"]["ppl"] == 110.0 and app.state["delta_pct"] == pytest.approx(10.0)
    assert app.summary.value.startswith("int4 g128: perplexity 110.00 (+10.0 %")
    slider = app.controls["variant"]
    assert list(slider.options) == [PerplexityTableLabel(r) for r in sorted(rows, key=lambda r: r["bits_per_weight"])]
    slider.value = slider.options[-1]  # the most bits: int8
    assert app.state["row"]["ppl"] == 100.1 and "int8 channel" in app.summary.value
    for option in slider.options:  # mashed quickly: the last value wins
        slider.value = option
    assert app.state["row"]["format"] == "int8"


def PerplexityTableLabel(row):
    return widgets.PerplexityTable.label(row)


def test_method_advisor_answers_every_control():
    rows = [{"method": "gguf", "format": "Q6_K", "delta_pct": 0.4}, {"method": "gguf", "format": "Q4_K_M",
                                                                     "delta_pct": 2.5}]
    app = widgets.MethodAdvisor(rows, hardware="cpu", size="8B", memory_gb=8, measured_on="SmolLM2-135M")
    assert app.state["advice"].choice.fmt == "Q4_K_M" and "SmolLM2-135M measured +2.5 %" in app.summary.value
    app.controls["headroom_gb"].value = 0.0
    app.controls["context"].value = 0  # the bare 8 GB, no cache: Q6_K's 7.2 GB fits
    assert app.state["advice"].choice.fmt == "Q6_K" and "+0.4 %" in app.summary.value
    app.controls["context"].value = 131072  # a 17 GB cache fits nowhere in 8 GB
    assert app.state["advice"].choice is None and "shorter context" in app.summary.value
    app.controls["context"].value = 4096
    app.controls["memory_gb"].value = 2
    assert app.state["advice"].choice is None and "Nothing fits" in app.summary.value
    app.controls["finetune"].value = True  # fine-tuning on a CPU: refused with a message, no traceback
    assert "NVIDIA GPU" in app.state["error"] and "NVIDIA GPU" in app.message.value
    app.controls["hardware"].value = "hopper"
    app.controls["memory_gb"].value = 8  # QLoRA: NF4 base weights, 8B x 4.5 bits x 1.1 = 5 GB, + 0.54 GB cache
    assert app.state["advice"].choice.fmt == "nf4" and app.state["advice"].gb == pytest.approx(4.95 + 0.537, abs=1e-3)


def salient_layer():
    """A synthetic layer whose inputs have 4 channels 10x larger than the rest, in every token."""
    from qtutor import synth

    X, channels = synth.activations_with_outlier_channels(tokens=256, channels=256, outlier_channels=4,
                                                          outlier_scale=10, seed=0)
    return synth.llm_like_weights(64, 256, seed=1), X, channels


def test_awq_alpha_search_starts_at_rtn_and_beats_it_on_salient_channels():
    from qtutor import formats

    W, X, _ = salient_layer()
    app = widgets.AWQAlphaSearch(W, X, bits=4, group_size=128)
    rtn = formats.get("int4").encode(W, group_size=128).dequantize()
    rtn_error = np.mean((X.astype(np.float64) @ (rtn - W).T.astype(np.float64)) ** 2)
    assert app.state["alphas"][0] == 0.0
    assert app.state["losses"][0] == pytest.approx(rtn_error, rel=1e-4)  # alpha = 0: s = 1, plain rounding
    assert app.state["rtn_loss"] == pytest.approx(rtn_error, rel=1e-4)
    assert app.state["alpha"] > 0 and app.state["gain"] > 1.5
    assert app.state["best_loss"] == min(app.state["losses"]) and "smaller" in app.summary.value
    int4_loss = app.state["rtn_loss"]
    app.controls["bits"].value = 3
    assert app.state["settings"]["bits"] == 3 and app.state["rtn_loss"] > 2 * int4_loss
    app.controls["group_size"].value = -1
    assert app.state["settings"]["group_size"] == -1 and len(app.state["losses"]) == 20


def test_smoothing_slider_moves_the_peak_ratio_from_activations_to_weights():
    from qtutor import synth
    from qtutor.methods import smoothquant

    X, planted = synth.activations_with_outlier_channels(tokens=256, channels=256, outlier_channels=4,
                                                         outlier_scale=40, seed=0)
    W = synth.llm_like_weights(64, 256, seed=1, outlier_fraction=0.0)
    app = widgets.SmoothingSlider(X, W, alpha=0.0, highlight=planted)
    ratios = []
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        app.controls["alpha"].value = alpha
        ratios.append((app.state["activation_ratio"], app.state["weight_ratio"]))
    activation, weight = zip(*ratios)
    assert all(a > b for a, b in zip(activation, activation[1:]))  # activations flatten as alpha grows
    assert all(a < b for a, b in zip(weight, weight[1:]))  # the weights take the range over
    assert activation[-1] == pytest.approx(1.0, abs=1e-5)  # alpha = 1: every channel's peak becomes max|W_j|^0 = 1
    app.controls["alpha"].value = 0.5
    s = smoothquant.smoothing_scales(np.abs(X).max(axis=0), [W], 0.5)
    assert np.allclose(app.state["activation_peaks"], app.state["weight_peaks"], rtol=1e-4)  # alpha 0.5: even split
    assert np.allclose(app.state["s"], s)
    assert app.state["w8a8_error"] < app.unsmoothed["w8a8_error"] / 3
    assert app.state["w4a4_error"] < 0.75 * app.unsmoothed["w4a4_error"]
    assert "W8A8 error" in app.summary.value


def test_quantization_explorer_answers_from_its_table_and_measures_a_new_point(tiny):
    from qtutor.eval.perplexity import score
    from qtutor.eval.sweep import evaluate

    model, tokenizer = tiny
    baseline = score(model, tokenizer, max_tokens=513, ctx=256, stride=128, progress=False)
    table = [evaluate(model, tokenizer, "rtn", "int4", 64, max_tokens=513, baseline=baseline)]
    app = widgets.QuantizationExplorer(model, tokenizer, baseline, table, method="RTN", bits=4, group="64")
    assert app.state["point"] is table[0] and "RTN INT4 g64" in app.summary.value
    app.controls["bits"].value = 2  # not in the table: nothing runs until Compute is pressed
    assert app.state["point"] is None and "press Compute" in app.message.value and len(app.points) == 1
    app.compute_point()
    point = app.state["point"]
    assert point["tokens"] == baseline.n_tokens and point["delta_pct"] > table[0]["delta_pct"]
    assert point["ppl"] == pytest.approx(evaluate(model, tokenizer, "rtn", "int2", 64, max_tokens=513)["ppl"])
    app.controls["bits"].value = 4
    app.controls["bits"].value = 2  # back to the measured point: from the cache, not measured again
    assert app.state["point"] is point and len(app.points) == 2
    app.controls["method"].value = "GPTQ"  # without calibration data: said, nothing lost
    app.compute_point()
    assert "calibration" in app.state["error"] and len(app.points) == 2


def layer_error_data():
    """Stored-format layer errors for a 2-block model: GPTQ halves RTN's error everywhere but on one layer."""
    names = [f"model.layers.{b}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}" for b in range(2)
             for p in widgets.PROJECTIONS]
    rtn = {name: 0.01 * (i + 1) for i, name in enumerate(names)}
    gptq = {name: value / 2 for name, value in rtn.items()}
    gptq["model.layers.1.mlp.down_proj"] = 0.5
    return {"settings": ["INT4 g64"], "methods": ["RTN", "GPTQ"], "layers": names,
            "errors": {"INT4 g64": {"RTN": rtn, "GPTQ": gptq}}}


def test_layer_error_map_names_the_worst_layers_and_shows_gptq_against_rtn():
    data = layer_error_data()
    app = widgets.LayerErrorMap(data)
    grid = app.state["grid"]
    assert grid.shape == (2, 7) and grid[1, 6] == pytest.approx(0.14) and grid[0, 0] == pytest.approx(0.01)
    assert app.state["worst"][0][0] == "1.down_proj" and app.state["cells"][0] == (1, 6)
    assert "largest errors: 1.down_proj 0.14" in app.summary.value
    app.controls["method"].value = "GPTQ"
    app.controls["view"].value = "ratio"
    ratio = app.state["grid"]
    assert ratio[0, 0] == pytest.approx(0.5) and ratio[1, 6] == pytest.approx(0.5 / 0.14)
    assert app.state["helped"] == pytest.approx(13 / 14) and "lower than RTN's on 93% of the layers" in app.summary.value
    assert app.figure is not None and max(app.figure.get_size_inches() * app.figure.dpi) < 2000


def test_layer_error_map_refuses_a_setting_it_has_no_data_for():
    with pytest.raises(ValueError, match="no stored errors for AWQ"):
        widgets.layer_error_summary(layer_error_data(), "INT4 g64", "AWQ", "error")


def stored_run(steps=(0, 10, 20), q_max=7):
    """A run in the shape tools/training_smollm2.py stores: the weights drift onto the grid's integers."""
    rng = np.random.default_rng(0)
    bins = np.linspace(-1.0, q_max + 1.0, 8 * (q_max + 2) + 1)
    checkpoints = []
    for i, step in enumerate(steps):
        u = rng.uniform(0, q_max, 4000)
        u = u + (np.round(u) - u) * i / len(steps)  # later checkpoints sit closer to the integers
        checkpoints.append({"step": step, "ppl": 80.0 - 10 * i, "ppl_stderr": 3.0, "delta_pct": 200.0 - 40 * i,
                            "delta_pct_stderr": 8.0, "codes": np.histogram(u, bins=bins)[0].tolist()})
    return {"losses": list(np.linspace(4.5, 3.9, steps[-1])), "checkpoints": checkpoints,
            "histogram_bins": bins.tolist()}


def test_training_replay_moves_through_checkpoints_and_runs():
    runs = {"INT3 g64": stored_run(), "QLoRA": {**stored_run((0, 5)), "histogram_bins": None}}
    for point in runs["QLoRA"]["checkpoints"]:
        del point["codes"]
    app = widgets.TrainingReplay(runs, baselines={"INT3 g64": {"RTN": 80.2, "float": 25.7}})
    assert app.state["step"] == 0 and app.state["ppl"] == 80.0
    first_near = app.state["near_grid"]
    app.controls["checkpoint"].value = 2
    assert app.state["step"] == 20 and app.state["ppl"] == 60.0 and app.state["near_grid"] > first_near + 0.1
    assert app.state["recent_loss"] == pytest.approx(np.mean(runs["INT3 g64"]["losses"][10:20]))
    assert "step 20: perplexity 60.0" in app.summary.value and "within 1/8 step" in app.summary.value
    app.controls["run"].value = "QLoRA"  # two checkpoints only: the slider's end shows its last one
    assert app.state["step"] == 5 and "near_grid" not in app.state and "within" not in app.summary.value
    with pytest.raises(ValueError, match="checkpoints 0 ... 1"):
        widgets.replay_summary(runs["QLoRA"], 2)
    with pytest.raises(ValueError, match="no runs"):
        widgets.TrainingReplay({})


def test_ste_picture_draws_the_staircase_and_both_gradients():
    fig = figures.ste_rounding(q_max=3)
    left, right = fig.axes
    assert len(left.lines) == 2 and left.lines[1].get_ydata().max() == 3
    assert set(np.unique(right.lines[0].get_ydata())) == {0.0, 1.0}
    plt.close(fig)
