"""AWQ on tensors: the scale grid, its normalization, the clip search, and the gain over RTN."""
from __future__ import annotations

import numpy as np
import pytest

from qtutor import formats
from qtutor.methods import awq, gptq, rtn
from qtutor.eval.layer_error import layer_loss


@pytest.fixture
def salient():
    """Inputs where 8 of 256 channels are 10x larger on average: the weights they meet are the salient ones."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 256)).astype(np.float32)
    X[:, :8] *= 10
    W = rng.normal(0, 0.05, size=(96, 256)).astype(np.float32)
    return W, X


def test_grids_are_the_references():
    assert awq.ALPHA_GRID == tuple(i / 20 for i in range(20)) and 1.0 not in awq.ALPHA_GRID
    assert np.allclose(awq.CLIP_GRID, [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55])


def test_scales_are_normalized_so_max_times_min_is_one(salient):
    _, X = salient
    for alpha in (0.1, 0.5, 0.95):
        s = awq.scales_for(alpha, awq.activation_mean(X))
        assert s.max() * s.min() == pytest.approx(1.0, rel=1e-5)
        assert np.argmax(s) < 8  # the salient channels get the largest scales
    assert np.all(awq.scales_for(0.0, awq.activation_mean(X)) == 1.0)


def test_alpha_zero_is_exactly_rtn(salient):
    W, X = salient
    fmt = formats.get("int4")
    found = awq.search_scale(X, [W], awq.linear_block, fmt, 128, alphas=(0.0,))
    rounded = rtn.quantize(W, fmt, 128)
    rtn_loss = np.mean((awq.linear_block([rounded.dequantize()], X) - X @ W.T) ** 2)
    assert found["losses"][0] == pytest.approx(float(rtn_loss), rel=1e-6)


@pytest.mark.parametrize("bits,group_size", [(3, 128), (4, 128), (3, -1)])
def test_awq_beats_rtn_when_some_channels_are_salient(salient, bits, group_size):
    W, X = salient
    fmt = formats.get(f"int{bits}")
    H = gptq.hessian(X)
    q = awq.quantize(W, fmt, group_size, calib=X)
    loss_awq = layer_loss(W, q.dequantize(), H)
    loss_rtn = layer_loss(W, rtn.quantize(W, fmt, group_size).dequantize(), H)
    assert loss_awq < 0.8 * loss_rtn
    assert q.extra["alpha"] > 0 and len(q.extra["losses"]) == 20


def test_clip_search_never_increases_the_group_output_error(salient):
    W, X = salient
    fmt = formats.get("int3")
    max_val = awq.search_clip(W, X, fmt, 128)
    assert max_val.shape == (96, 2)
    assert np.all(max_val <= np.abs(W.reshape(96, 2, 128)).max(axis=2) + 1e-7)
    clipped = awq.apply_clip(W, max_val, 128)
    error = lambda V: np.mean((X @ fmt.encode(V, group_size=128).dequantize().T - X @ W.T) ** 2)  # noqa: E731
    assert error(clipped) <= error(W) * (1 + 1e-6)


@pytest.mark.parametrize("role", ["q", "k", "qkv"])
def test_query_and_key_projections_are_not_clipped(salient, role):
    W, X = salient
    fmt = formats.get("int3")
    q_proj = awq.quantize(W, fmt, 128, calib=X, name="model.layers.0.self_attn.q_proj", role=role)
    no_clip = awq.quantize(W, fmt, 128, calib=X, clip=False)
    clipped = awq.quantize(W, fmt, 128, calib=X, role="v")
    np.testing.assert_array_equal(q_proj.dequantize(), no_clip.dequantize())
    assert not np.array_equal(clipped.dequantize(), no_clip.dequantize())  # the clip search did change v


def test_the_searches_rank_candidates_by_the_weight_as_stored():
    """A group clipped to [-m, m] at INT3: the exact scale 2m/7 would put the zero point on the tie 3.5 -> 4;
    the float16 scale, rounded up, gives zero point 3, and code 7 is never reached. The searches see that."""
    fmt = formats.get("int3")
    m = np.float32(0.3)
    W = np.array([[-m, m, 0.1, -0.2, 0.05, 0.25, -0.15, 0.0]], dtype=np.float32)
    stored = fmt.encode(W, group_size=8)
    assert stored.scales[0, 0] > 2 * m / 7 and np.float16(stored.scales[0, 0]) == stored.scales[0, 0]
    assert (stored.zeros[0, 0], stored.codes.min(), stored.codes.max()) == (3, 0, 6)
    np.testing.assert_array_equal(awq.fake_quantize(W, fmt, 8, None), stored.dequantize())


def test_duo_scaling_is_available_and_valid(salient):
    W, X = salient
    q = awq.quantize(W, formats.get("int4"), 128, calib=X, duo_scaling=True)
    assert np.all(np.isfinite(q.dequantize()))


def test_missing_calibration_and_bad_alpha_are_clear_errors(salient):
    W, _ = salient
    with pytest.raises(ValueError, match="calibration inputs"):
        awq.quantize(W, formats.get("int4"), 128)
    with pytest.raises(ValueError, match=r"alpha=1.5 must be in \[0, 1\]"):
        awq.scales_for(1.5, np.ones(4))
