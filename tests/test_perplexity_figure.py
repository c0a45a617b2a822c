"""The figure of perplexity against size: error bars from the points, broken models on the top edge."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from qtutor.viz import figures  # noqa: E402


def test_points_carry_their_standard_errors_and_a_broken_model_sits_on_the_top_edge():
    points = [{"method": "rtn", "bits_per_weight": 4.3, "ppl": 26.0, "ppl_stderr": 2.0},
              {"method": "rtn", "bits_per_weight": 3.3, "ppl": 63.0, "ppl_stderr": 5.0},
              {"method": "rtn", "bits_per_weight": 2.3, "ppl": 4e5, "ppl_stderr": 3e4}]
    fig = figures.perplexity_points(points, reference=20.0, reference_stderr=1.5, chosen=points[2])
    ax = fig.axes[0]
    line = ax.lines[0]  # the errorbar's markers: the two points below the ceiling only
    assert np.allclose(line.get_ydata(), [63.0, 26.0])
    segments = ax.collections[0].get_segments()  # the error bars: ppl +- stderr
    assert sorted((s[0][1], s[1][1]) for s in segments) == [(24.0, 28.0), (58.0, 68.0)]
    top = 20.0 * 10
    assert any(text.get_text() == "4e+05" and text.xy == (2.3, top) for text in ax.texts)
    assert ax.get_yscale() == "log" and ax.get_ylim()[1] > top


def test_labelled_points_name_every_working_point_and_no_two_labels_overlap():
    import matplotlib

    matplotlib.use("Agg")
    points = [{"method": "rtn", "format": "int4", "group": f"g{g}", "bits_per_weight": 4 + 16 / g, "ppl": 30 - g / 16,
               "ppl_stderr": 1.0} for g in (16, 32, 64, 128)]
    points += [{"method": "gguf", "label": "Q4_K_M", "bits_per_weight": 4.85, "ppl": 26.0, "ppl_stderr": 1.0},
               {"method": "rtn", "format": "int2", "group": "g64", "bits_per_weight": 2.3, "ppl": 1e5}]
    fig = figures.perplexity_points(points, reference=25.0, reference_stderr=1.0, labels=True)
    texts = {t.get_text(): t for t in fig.axes[0].texts}
    assert {"int4 g16", "int4 g32", "int4 g64", "int4 g128", "Q4_K_M"} <= set(texts)
    assert "int2 g64" not in texts  # a broken model is named by its value on the top edge instead
    renderer = fig.canvas.get_renderer()
    boxes = [texts[name].get_window_extent(renderer) for name in ("int4 g16", "int4 g32", "int4 g64", "int4 g128",
                                                                  "Q4_K_M")]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
