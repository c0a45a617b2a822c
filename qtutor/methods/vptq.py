"""VPTQ: vector quantization inside GPTQ's loop. Vectors of v weights are replaced by entries of a table that
k-means learned from the layer, and each column's error is pushed onto the columns not yet quantized.

Liu, Wen, Wang, Yang, Cao, Li, Zhang, Jin, "VPTQ: Extreme Low-bit Vector Post-Training Quantization for Large
Language Models", EMNLP 2024, arXiv:2409.17066 (code: microsoft/VPTQ, branch ``algorithm``).

The vectors run down the *columns* of W (out_features x in_features): column j is cut into out/v vectors
w_{j,t} = W[t v:(t+1) v, j]. A whole column is then quantized at once, so GPTQ's update carries over unchanged
(qtutor.methods.gptq: H = 2 X X^T / n, H^-1 = U^T U):

    q_j   = [ C[c(w_{j,t})] for every t ],   c(x) = argmin_k ||x - C_k||^2          (nearest centroid)
    err   = (w_j - q_j) / U_jj,      W[:, l] -= err * U_jl   for l > j                (lazy blocks as GPTQ)

The table C (K x v) is fitted before the loop by k-means on the vectors of W, each weighted by how much its
column matters to the output, the diagonal of H:    min_C  sum_{j,t} H_jj ||w_{j,t} - C_c(w_{j,t})||^2.
A residual table R is optional: k-means (same weights) on what the first pass left, r_j = w_j - q_j, then the
loop runs again from the start with q = C[c(w)] + R[c'(w - C[c(w)])] (two codes per vector).

Sizes. A vector costs sum of the stages' bits, a table K v float16 numbers. The paper's 2-bit setting, v = 8
with K = 65536 (16 bits per 8 weights), stores 65536 x 8 x 16 = 8.4 Mbit: more than SmolLM2's largest layer
(1536 x 576 = 885 k weights, 1.8 Mbit at 2 bits). So the formats here use small tables:

    vptq_v8_2bit  v = 8, 256 + residual 256 entries: (8 + 8)/8 = 2 bits per weight, tables 2 x 256 x 8 x 16 =
                  65.5 kbit: +0.074 bpw on 1536 x 576, +0.20 on 576 x 576, +0.59 on k/v_proj (192 x 576),
                  +0.13 averaged over a SmolLM2 block (2.13 bpw);
    vptq_v4_3bit  v = 4, 64 + residual 64 entries: (6 + 6)/4 = 3 bits per weight, tables 8.2 kbit: +0.009,
                  +0.025, +0.074 on those layers, +0.016 averaged (3.02 bpw).
                  The default: its tables cost almost nothing and its k-means is the cheaper of the two.

On the tiny model (256 x 256 layers) the 2-bit tables cost a whole bit per weight: small layers pay for tables.
The centroids are rounded to float16 before the loop, so the feedback corrects the values that are stored.

Left out: the paper's outlier columns with their own table, channel-wise normalisation, the column
permutation, codebook fine-tuning and end-to-end fine-tuning. K-means fits on at most 16 K vectors drawn in
proportion to their weight (with replacement; their counts become weights, so the objective is the weighted
one in expectation) and runs at most ``kmeans_iterations`` Lloyd steps: the layer's vectors can be 10^5+.
``group_size`` and ``sym`` mean nothing to a codebook and are ignored; so is ``role``.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qtutor.formats.base import as_float32, check_finite
from qtutor.formats.codebook import CodebookFormat, check_vectors, nearest_rows
from qtutor.methods import Method
from qtutor.methods.gptq import _warn_about_dead_inputs, inverse_cholesky_upper, layer_hessian
from qtutor.tensor import QuantizedTensor

KMEANS_ITERATIONS = 30  # Lloyd steps at most
KMEANS_TOLERANCE = 1e-3  # stop once the weighted inertia falls by less than this fraction in a step
VECTORS_PER_CENTROID = 16  # k-means fits on at most this many sampled vectors per centroid
BLOCKSIZE = 128  # GPTQ's lazy batch


# ---- vectors and the nearest centroid ---------------------------------------------------------------------------

def column_vectors(W: Any, v: int) -> np.ndarray:
    """The vectors of ``W`` (out x in) as (in, out/v, v): entry [j, t] is W[t v:(t+1) v, j]."""
    return np.ascontiguousarray(W.T).reshape(W.shape[1], W.shape[0] // v, v)


def nearest_stages(V: Any, codebooks: list[np.ndarray], norms: list[np.ndarray] | None = None):
    """(codes (n, M), points (n, v)): each row of ``V`` coded stage by stage, stage m coding what stages < m left."""
    norms = norms or [(table**2).sum(axis=1) for table in codebooks]
    codes, total = [], np.zeros_like(V, dtype=np.float32)
    for table, norm in zip(codebooks, norms):
        codes.append(nearest_rows(V - total, table, norm)[0])
        total += table[codes[-1]]  # the sum of the stored entries, as decode forms it
    return np.stack(codes, axis=1), total


# ---- Hessian-weighted k-means --------------------------------------------------------------------------------------

def kmeans(V: np.ndarray, weights: np.ndarray, K: int, iterations: int = KMEANS_ITERATIONS,
           tolerance: float = KMEANS_TOLERANCE, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Weighted Lloyd: centroids C (K, v) minimising sum_i weights_i ||V_i - C_c(i)||^2, and what happened
    ({"iterations", "inertia", "converged"}). Starts from K distinct vectors drawn with probability proportional
    to their weight; an emptied cluster restarts at the vector the current table serves worst."""
    V, weights = np.asarray(V, dtype=np.float32), np.asarray(weights, dtype=np.float64)
    live = np.flatnonzero(weights > 0)
    if len(live) <= K:  # no more vectors than entries: each gets its own, exactly (the rest repeat the first)
        C = V[live] if len(live) else np.zeros((1, V.shape[1]), np.float32)
        return np.concatenate([C, np.repeat(C[:1], K - len(C), axis=0)]), {
            "iterations": 0, "inertia": 0.0, "converged": True}
    rng = np.random.default_rng(seed)
    C = V[rng.choice(live, K, replace=False, p=weights[live] / weights[live].sum())].copy()
    previous, converged = np.inf, False
    for iteration in range(1, iterations + 1):
        codes = nearest_rows(V, C)[0]
        cost = weights * ((V - C[codes]) ** 2).sum(axis=1)
        inertia = float(cost.sum())
        if np.isfinite(previous) and previous - inertia <= tolerance * previous:
            converged = True
            break
        previous = inertia
        mass = np.bincount(codes, weights, minlength=K)
        sums = np.stack([np.bincount(codes, weights * V[:, i], minlength=K) for i in range(V.shape[1])], axis=1)
        filled = mass > 0
        C[filled] = (sums[filled] / mass[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):
            C[empty] = V[np.argsort(-cost)[:len(empty)]]
    return C, {"iterations": iteration, "inertia": inertia, "converged": converged}


def fit_codebook(V: np.ndarray, weights: np.ndarray, K: int, iterations: int = KMEANS_ITERATIONS,
                 seed: int = 0, name: str = "layer") -> tuple[np.ndarray, dict]:
    """A float16-rounded table (K, v) for the vectors ``V`` weighted by ``weights`` (H_jj of their column), fitted
    on at most VECTORS_PER_CENTROID * K of them drawn in proportion to their weight."""
    weights = np.asarray(weights, dtype=np.float64)
    if not weights.sum() > 0:  # every column dead: plain k-means
        weights = np.ones_like(weights)
    limit = VECTORS_PER_CENTROID * K
    if len(V) > limit:
        drawn = np.random.default_rng(seed).choice(len(V), limit, replace=True, p=weights / weights.sum())
        rows, counts = np.unique(drawn, return_counts=True)
        V, weights = V[rows], counts.astype(np.float64)
    C, info = kmeans(V, weights, K, iterations, seed=seed)
    if not info["converged"]:
        warnings.warn(f"VPTQ {name}: k-means for a {K}-entry table stopped after {iterations} Lloyd steps before "
                      f"its inertia settled (to {KMEANS_TOLERANCE:g} per step); raise kmeans_iterations",
                      stacklevel=3)
    return C.astype(np.float16).astype(np.float32), info


# ---- GPTQ's loop with a vector quantizer --------------------------------------------------------------------------

def feedback_loop(W: np.ndarray, U: np.ndarray, codebooks: list[np.ndarray], v: int,
                  blocksize: int = BLOCKSIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GPTQ's lazy-batch loop, one column of vectors per step, the tables fixed. ``W`` (out x in, dead columns
    already zeroed), ``U`` the upper Cholesky factor of H^-1. Returns (Q, codes (in, out/v, M), residual), with
    residual[:, j] = w_j - q_j, the column as it was when its turn came minus its quantized value."""
    W, U = np.array(W, dtype=np.float32), np.asarray(U, dtype=np.float32)
    rows, columns = W.shape
    Q, residual = np.zeros_like(W), np.zeros_like(W)
    codes = np.zeros((columns, rows // v, len(codebooks)), dtype=np.int64)
    norms = [(table**2).sum(axis=1) for table in codebooks]
    for start in range(0, columns, blocksize):
        end = min(start + blocksize, columns)
        block_errors = np.zeros((rows, end - start), dtype=np.float32)
        for j in range(start, end):
            w = W[:, j]
            codes[j], q = nearest_stages(w.reshape(-1, v), codebooks, norms)
            Q[:, j], residual[:, j] = q.reshape(-1), w - q.reshape(-1)
            err = residual[:, j] / U[j, j]
            W[:, j + 1:end] -= np.outer(err, U[j, j + 1:end])  # inside the block at once
            block_errors[:, j - start] = err
        W[:, end:] -= block_errors @ U[start:end, end:]  # beyond it, lazily, as one product
    return Q, codes, residual


def vptq_layer(W: Any, H: Any, v: int, sizes: tuple[int, ...], n_tokens: int | None = None,
               kmeans_iterations: int = KMEANS_ITERATIONS, seed: int = 0, blocksize: int = BLOCKSIZE,
               percdamp: float = 0.01, name: str = "layer") -> dict:
    """VPTQ on one weight ``W`` (out x in) with Hessian ``H``: one table of ``sizes[0]`` entries, then a residual
    table per further size, each followed by a fresh pass of the loop. Returns {"Q", "codes", "codebooks",
    "damp", "kmeans"}."""
    W = np.array(W, dtype=np.float32)
    H = np.asarray(H, dtype=np.float64)
    _warn_about_dead_inputs(H, name)
    U, dead, damp = inverse_cholesky_upper(H, percdamp, n_tokens, name)
    W[:, dead] = 0  # an input that never fires carries no information (as GPTQ)
    # every vector of column j weighs H_jj: its squared error reaches the output through that input's energy
    weights = np.repeat(np.diag(H), W.shape[0] // v)
    codebooks, fits = [], []
    target = column_vectors(W, v).reshape(-1, v)  # the first table learns W; each further one, what is left
    for stage, K in enumerate(sizes):
        table, info = fit_codebook(target, weights, K, kmeans_iterations, seed + stage, name)
        codebooks.append(table)
        fits.append(info)
        Q, codes, residual = feedback_loop(W, U, codebooks, v, blocksize)
        target = column_vectors(residual, v).reshape(-1, v)
    return {"Q": Q, "codes": codes, "codebooks": codebooks, "damp": damp, "kmeans": fits}


# ---- one call --------------------------------------------------------------------------------------------------

def quantize(W: Any, fmt: CodebookFormat, group_size: Any = None, sym: bool | None = None, calib: Any = None, *,
             H: Any = None, kmeans_iterations: int = KMEANS_ITERATIONS, seed: int = 0, blocksize: int = BLOCKSIZE,
             percdamp: float = 0.01, name: str = "layer", role: str | None = None) -> QuantizedTensor:
    """VPTQ-quantize ``W (out_features, in_features)`` into the learned codebook format ``fmt`` (vptq_v8_2bit,
    vptq_v4_3bit) with calibration inputs ``calib (tokens, in_features)`` or a Hessian ``H``. ``group_size``,
    ``sym`` and ``role`` are accepted and ignored (a codebook has no groups and no zero point)."""
    formats = METHOD.formats
    if not (isinstance(fmt, CodebookFormat) and fmt.learned and fmt.name in formats):
        raise ValueError(f"VPTQ fills its own learned codebook formats ({', '.join(formats)}); "
                         f"{getattr(fmt, 'name', fmt)!r} is not one of them")
    if int(kmeans_iterations) < 1 or int(blocksize) < 1 or not percdamp > 0:
        raise ValueError(f"VPTQ needs kmeans_iterations >= 1, blocksize >= 1 and percdamp > 0; got "
                         f"kmeans_iterations={kmeans_iterations}, blocksize={blocksize}, percdamp={percdamp}")
    W = as_float32(W, f"vptq {name}")
    check_vectors(tuple(W.shape), fmt.vector_size, fmt.name, axis="out")
    check_finite(W, f"vptq {name}", "k-means and the error feedback need finite weights")
    H, n_tokens = layer_hessian(W.shape[1], calib, H, "VPTQ", name)
    sizes = tuple(2**bits for bits in fmt.codebook_bits)
    done = vptq_layer(W, H, fmt.vector_size, sizes, n_tokens, int(kmeans_iterations), seed, int(blocksize),
                      percdamp, name)
    return fmt.tensor(done["codes"], None, tuple(W.shape), "vptq", codebooks=np.stack(done["codebooks"]),
                      vector_axis="out", extra={"damp": done["damp"], "kmeans": done["kmeans"]})


# calibration text and each layer's inputs, block by block as GPTQ (the reference reads Hessians collected once
# from the float model; here each block's come from the model with the blocks before it already quantized)
METHOD = Method("vptq", quantize=quantize, calibration=True, layer_inputs=True, sequential=True,
                formats=("vptq_v4_3bit", "vptq_v8_2bit"))
