"""The live GPU GEMV table (notebook 14's replacement for the stored H100 figures): on a CUDA GPU with torch's
int4 kernel it measures every stored shape, and at batch 1 the 4-bit kernel beats bf16, as KERNELS.md reports."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qtutor.eval import speed  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_live_rows_measure_every_stored_shape():
    rows, note = speed.live_gpu_rows(repeats=20)
    assert rows is not None, note
    assert [(r["shape"], r["M"]) for r in rows] == [(r["shape"], r["M"]) for r in speed.STORED_H100["gemv"]]
    large_m1 = [r for r in rows if r["M"] == 1 and r["shape"] == "28672 x 8192"]
    assert large_m1[0]["int4_vs_bf16"] > 1.5  # 4x fewer bytes; stored: 2.6x on an H100
