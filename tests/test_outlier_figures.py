"""The two activation-outlier figures draw the numbers they are given: one ratio per block per kind of input on a
log axis, and a layer's channel peaks with the highest channels marked and labelled."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qtutor.viz import figures  # noqa: E402


def test_peak_ratio_by_block_draws_one_series_per_kind_at_the_given_ratios():
    ratios = {"q/k/v input": [3.0, 20.0, 8.0], "down_proj input": [9.0, 3000.0, 85.0]}
    fig = figures.peak_ratio_by_block(ratios, title="t", reference=6.0, reference_label="tiny model")
    ax = fig.axes[0]
    series = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    for label, values in ratios.items():
        np.testing.assert_array_equal(series[label].get_xdata(), [0, 1, 2])
        np.testing.assert_array_equal(series[label].get_ydata(), values)
    assert list(series["tiny model"].get_ydata()) == [6.0, 6.0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "block" and "median" in ax.get_ylabel()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [*ratios, "tiny model"]
    plt.close(fig)


def test_channel_peak_profile_marks_and_labels_the_highest_channels():
    peaks = np.ones(100)
    peaks[[7, 90]] = [500.0, 40.0]
    peaks[50] = 2.0
    fig = figures.channel_peak_profile(peaks, threshold=6.0, top=2)
    ax = fig.axes[0]
    everything, highest = ax.collections
    np.testing.assert_array_equal(everything.get_offsets()[:, 1], peaks)
    assert sorted(map(tuple, highest.get_offsets().tolist())) == [(7.0, 500.0), (90.0, 40.0)]
    labels = [text.get_text() for text in ax.texts]
    assert labels == ["channel 7: 500", "channel 90: 40"]
    lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
    assert lines["threshold 6"] == 6.0 and lines["median channel: 1"] == 1.0
    assert ax.get_yscale() == "log"
    plt.close(fig)
