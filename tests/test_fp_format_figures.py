"""Notebook 11's figures: perplexity changes with their paired noise, and a block's values before and after a
rotation, scaled onto the element grid."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from qtutor.viz import figures  # noqa: E402


def test_each_change_carries_one_and_two_paired_standard_errors_from_the_top_down():
    rows = [{"label": "A", "delta_pct": 1.0, "delta_pct_stderr": 0.5},
            {"label": "B", "delta_pct": -0.2, "delta_pct_stderr": 0.1}]
    fig = figures.changes_with_noise(rows, groups=["weights", "W4A4"])
    ax = fig.axes[0]
    spans = sorted((tuple(np.round(line.get_xdata(), 6)), float(line.get_ydata()[0])) for line in ax.lines
                   if len(line.get_xdata()) == 2 and line.get_linestyle() == "-")
    assert spans == [((-0.4, 0.0), 0.0), ((-0.3, -0.1), 0.0), ((0.0, 2.0), 1.0), ((0.5, 1.5), 1.0)]
    at = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert at == {"A": 1, "B": 0}  # the first row on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["weights", "W4A4"]


def test_blocks_are_scaled_onto_the_grid_and_the_legend_states_their_max_over_rms():
    before = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])  # max/RMS = 2 in each block
    after = np.full((2, 4), 0.5)  # max/RMS = 1
    grid = np.array([-6.0, -3.0, 0.0, 3.0, 6.0])
    fig = figures.block_values_before_after(before, after, grid, bins=12)
    ax = fig.axes[0]
    first, second = ax.containers  # one histogram each: every block's largest value lands on the grid's top
    assert sum(p.get_height() for p in first) == 8 and first[-1].get_height() == 2
    assert second[-1].get_height() == 8
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before: median max/RMS 2.00",
                                                                   "after: median max/RMS 1.00"]
