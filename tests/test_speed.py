"""Speed helpers: the roofline and arithmetic intensity (pure arithmetic), the GEMV variants compute the same
layer (their outputs agree, so a timing compares like with like), the timing rows and the stored H100 ratios.
No timing is asserted: a shared runner's clock proves nothing (benchmarks/decode_cpu.py prints them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qtutor.eval import speed


def test_intensity_is_flops_per_weight_byte():
    assert speed.intensity(1, 32) == 0.5  # 2 flops per 4-byte weight
    assert speed.intensity(1, 4) == 4.0
    assert speed.intensity(16, 16) == 16.0
    assert speed.intensity(8, 4.5) == pytest.approx(2 * 8 / (4.5 / 8))


def test_roofline_is_the_lower_of_the_two_roofs():
    bandwidth, peak = 20e9, 100e9
    got = speed.roofline([0.5, 5.0, 50.0], bandwidth, peak)
    np.testing.assert_array_equal(got, [10e9, 100e9, 100e9])
    assert speed.roofline(1.0, bandwidth, peak) == 20e9
    ridge = peak / bandwidth  # the intensity where the two roofs meet
    assert speed.roofline(ridge * 0.99, bandwidth, peak) < peak == speed.roofline(ridge, bandwidth, peak)


def test_gemv_variants_agree_where_they_share_the_weights():
    """The float variants and the kernels compute y = x W^T for one W (the kernels from its RTN codes, close to
    it); the fake-quant ones dequantize random codes of the same shape (their time, not their output, matters)."""
    N, K, g = 64, 256, 64
    variants = speed.gemv_variants(N, K, group_size=g, batch=2)
    with torch.no_grad():
        outputs = {label: v["call"]().float() for label, v in variants.items() if v["call"] is not None}
    reference = outputs["float32"]
    assert reference.shape == (2, N)
    spread = reference.abs().max()
    assert (outputs["bfloat16"] - reference).abs().max() < 0.02 * spread
    for label, y in outputs.items():
        assert y.shape == (2, N), label
        if " kernel," in label:  # RTN of the same weights: a few percent of the output's range
            assert (y - reference).abs().max() < (0.02 if "int8" in label else 0.2) * spread, label
    assert variants["float32"]["bytes"] == 4 * N * K and variants["bfloat16"]["bytes"] == 2 * N * K
    assert variants["int4 fake-quant"]["bytes"] == N * K + 8 * N * K // g  # a byte per code, float32 scale and zero


def test_gemv_times_rows():
    rows = speed.gemv_times(64, 256, repeats=1)
    labels = [row["label"] for row in rows]
    assert labels[0] == "float32" and rows[0]["vs_float32"] == 1.0
    assert {"bfloat16", "int4 fake-quant", "nf4 (no CPU kernel)"} <= set(labels)
    for row in rows:
        if row["seconds"] is None:
            assert row["vs_float32"] is None and "torch" in row["note"]
            continue
        assert row["seconds"] > 0 and row["bytes_per_s"] == row["bytes"] / row["seconds"]
        assert row["flops_per_s"] == pytest.approx(2 * 64 * 256 / row["seconds"])
        assert row["vs_float32"] == pytest.approx(rows[0]["seconds"] / row["seconds"])


def test_kernel_variants_without_the_kernel_say_why(monkeypatch):
    monkeypatch.delattr(torch, "_weight_int8pack_mm", raising=False)  # torch.ops resolves names lazily: not there
    variants = speed.kernel_variants("int8", np.zeros((16, 64), np.float32), torch.zeros(1, 64), 64)
    (row,) = variants.values()
    assert row["call"] is None and "no torch._weight_int8pack_mm" in row["note"]


def test_stored_gpu_rows_keep_the_kernel_report_s_picture():
    """KERNELS.md: tinygemm int4 is 2.3-2.6x bf16 at M = 1 and slower than bf16 at M = 16."""
    rows = speed.stored_gpu_rows()
    assert len(rows) == len(speed.STORED_H100["gemv"])
    for row in rows:
        assert row["int4_vs_bf16"] == row["bf16_us"] / row["int4_us"]
        if row["M"] == 1:
            assert 2.2 < row["int4_vs_bf16"] < 2.7
        else:
            assert row["int4_vs_bf16"] < 1
    # the stored bf16 GEMV times sit on the bandwidth roof: 2 bytes per weight at the measured HBM rate
    for row in rows:
        N, K = (int(n) for n in row["shape"].split(" x "))
        floor_us = 2 * N * K / speed.STORED_H100["hbm_bytes_per_s"] * 1e6
        assert floor_us < row["bf16_us"] < 3 * floor_us


def test_copy_bandwidth_and_peak_are_positive_rates():
    assert speed.copy_bandwidth(n_bytes=1 << 22, repeats=1) > 1e8  # 100 MB/s: any machine moves more
    assert speed.matmul_peak(n=128, repeats=1) > 1e7


def test_roofline_chart_draws_the_roofs_and_the_points():
    import matplotlib

    matplotlib.use("Agg")
    from qtutor.viz.figures import roofline_chart

    points = [{"label": "float32", "intensity": 0.5, "flops_per_s": 8e9},
              {"label": "int4 kernel", "intensity": 3.6, "flops_per_s": 30e9}]
    fig = roofline_chart(points, bandwidth=20e9, peak=100e9, title="test")
    ax = fig.axes[0]
    roof, *dots = ax.lines
    x, y = roof.get_data()
    np.testing.assert_allclose(y, np.minimum(100.0, x * 20.0))  # in Gflop/s
    assert [d.get_label() for d in dots] == ["float32", "int4 kernel"]
    assert dots[1].get_data()[1][0] == 30.0
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_live_gpu_rows_say_why_not_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tests/gpu/test_speed_gpu.py measures the live rows")
    rows, note = speed.live_gpu_rows()
    assert rows is None and "stored H100" in note
