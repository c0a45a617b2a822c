"""Figures: data in, matplotlib artists out. No state, no widgets, no model loading.

Every function draws on an ``Axes`` it is given (or makes a new figure) and returns what it drew, so that a
notebook can call it once for the static figure beside a widget, and the widget can call it again to redraw.
Colours: quantized things in orange, originals in blue, errors in red, grids in grey.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

ORIGINAL = "#1f77b4"
QUANTIZED = "#ff7f0e"
ERROR = "#d62728"
GRID = "#7f7f7f"
SIGN, EXPONENT, MANTISSA = "#e15759", "#4e79a7", "#59a14f"


def new_axes(ax=None, figsize=None, ncols: int = 1):
    """(figure, axes): the given axes' figure, or a new figure."""
    if ax is not None:
        return ax.figure, ax
    fig, axes = plt.subplots(1, ncols, figsize=figsize, constrained_layout=True)
    return fig, axes


# ---- formats -------------------------------------------------------------------------------------------------
def number_line(values: np.ndarray, ax=None, title: str = "", log: bool | None = None, highlight: dict | None = None):
    """Every representable value as a tick on a number line (symmetric-log scale when they span many octaves).

    ``highlight`` maps a label to a subset of values drawn in their own colour (e.g. subnormals)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig, ax = new_axes(ax, figsize=(8, 1.8))
    positive = np.abs(values[values != 0])
    spans_octaves = positive.size and positive.max() / positive.min() > 64
    if log if log is not None else spans_octaves:
        ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
    ax.vlines(values, 0, 1, color=GRID, linewidth=0.8)
    for (label, subset), colour in zip((highlight or {}).items(), (ORIGINAL, ERROR, QUANTIZED)):
        ax.vlines(np.asarray(subset, dtype=np.float64), 0, 1, color=colour, linewidth=1.4, label=label)
    if highlight:
        ax.legend(loc="upper left", fontsize=10, frameon=False, ncol=3)
    ax.set_yticks([])
    ax.set_ylim(0, 1.45 if highlight else 1)
    ax.set_title(title or f"{values.size} representable values", fontsize=10)
    ax.grid(False)
    return fig


def bit_layout(sign_bits: int, exponent_bits: int, mantissa_bits: int, bits: Sequence[int] | None = None,
               ax=None, title: str = ""):
    """Boxes for the sign, exponent and mantissa fields; with ``bits`` (most significant first), the digits."""
    total = sign_bits + exponent_bits + mantissa_bits
    fig, ax = new_axes(ax, figsize=(max(3.0, 0.45 * total + 1), 1.2))
    colours = [SIGN] * sign_bits + [EXPONENT] * exponent_bits + [MANTISSA] * mantissa_bits
    for i, colour in enumerate(colours):
        ax.add_patch(plt.Rectangle((i, 0), 0.95, 0.95, color=colour, alpha=0.8))
        if bits is not None:
            ax.text(i + 0.47, 0.45, str(int(bits[i])), ha="center", va="center", color="white", fontsize=11,
                    fontweight="bold")
    for label, start, width in (("sign", 0, sign_bits), ("exponent", sign_bits, exponent_bits),
                                ("mantissa", sign_bits + exponent_bits, mantissa_bits)):
        if width:
            ax.text(start + width / 2, 1.1, label, ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.1, total + 0.1)
    ax.set_ylim(-0.1, 1.6)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return fig


# ---- weights and their grids ---------------------------------------------------------------------------------
def weight_histogram(weights: np.ndarray, grid: np.ndarray | None = None, ax=None, bins: int = 120,
                     title: str = "", outliers: np.ndarray | None = None):
    """Histogram of weights with the quantization grid (the values codes can take) as vertical lines."""
    weights = np.asarray(weights, dtype=np.float64).ravel()
    fig, ax = new_axes(ax)
    ax.hist(weights, bins=bins, color=ORIGINAL, alpha=0.75, label=f"{weights.size:,} weights")
    if grid is not None:
        grid = np.unique(np.asarray(grid, dtype=np.float64))
        for i, g in enumerate(grid):
            ax.axvline(g, color=QUANTIZED, linewidth=0.9, alpha=0.9, label="grid" if i == 0 else None)
    if outliers is not None and np.size(outliers):
        ax.plot(np.asarray(outliers).ravel(), np.zeros(np.size(outliers)), "v", color=ERROR, markersize=7,
                label=f"{np.size(outliers)} outliers")
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def quantization_panels(original: np.ndarray, codes: np.ndarray, dequantized: np.ndarray, title: str = ""):
    """Four heatmaps: original, integer codes, dequantized, |error| (the layout of DeepLearning.AI's course)."""
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.8), constrained_layout=True)
    error = np.abs(np.asarray(original, dtype=np.float64) - np.asarray(dequantized, dtype=np.float64))
    limit = float(np.abs(original).max()) or 1.0
    panels = ((original, "original", "RdBu_r", (-limit, limit)), (codes, "codes", "viridis", (None, None)),
              (dequantized, "dequantized", "RdBu_r", (-limit, limit)), (error, "|error|", "Reds", (0, None)))
    for ax, (data, name, cmap, (low, high)) in zip(axes, panels):
        image = ax.imshow(np.asarray(data, dtype=np.float64), cmap=cmap, vmin=low, vmax=high, aspect="auto",
                          interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return fig


def error_vs_bits(rows: Sequence[dict], x: str = "bits_per_weight", y: str = "mse", group: str = "label", ax=None,
                  title: str = "", logy: bool = True):
    """One line per ``group`` of rows: ``y`` (error, perplexity, ...) against bits per weight."""
    fig, ax = new_axes(ax)
    labels = list(dict.fromkeys(row[group] for row in rows))
    for label in labels:
        points = sorted((row[x], row[y]) for row in rows if row[group] == label)
        ax.plot(*zip(*points), "o-", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def bar_chart(names: Sequence[str], values: Sequence[float], ax=None, title: str = "", ylabel: str = "",
              logy: bool = False, highlight: Sequence[str] = ()):
    """Bars per name (e.g. error per layer); names in ``highlight`` in red."""
    few = len(names) <= 16  # few bars: labels a projector shows, at 10 pt
    fig, ax = new_axes(ax, figsize=(max(6.0, (0.5 if few else 0.28) * len(names)), 3.8 if few else 3.4))
    colours = [ERROR if n in set(highlight) else ORIGINAL for n in names]
    ax.bar(range(len(names)), values, color=colours)
    ax.set_xticks(range(len(names)))
    if few:
        ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=10)
    else:
        ax.set_xticklabels(names, rotation=90, fontsize=7)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig


def heatmap(matrix: np.ndarray, row_labels: Sequence[str] | None = None, ax=None, title: str = "",
            cmap: str = "magma", log: bool = False, colorbar_label: str = ""):
    """A matrix as an image (e.g. layers x channels of activation magnitudes)."""
    from matplotlib.colors import LogNorm

    data = np.asarray(matrix, dtype=np.float64)
    fig, ax = new_axes(ax, figsize=(9, 0.3 * data.shape[0] + 1.5))
    norm = LogNorm(vmin=max(float(data[data > 0].min()) if (data > 0).any() else 1e-6, 1e-12)) if log else None
    image = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    if row_labels is not None:
        ax.set_yticks(range(len(row_labels)))
        ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_title(title)
    return fig


def label_points(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: float = 9) -> list:
    """Write ``texts`` next to the points (xs, ys) so that no two labels overlap and none sits on a point.

    Greedy, in screen pixels: each label, from the lowest point up, takes the first of a ring of positions around
    its point (right, left, above, below, then the diagonals, then twice as far) whose box meets no label placed
    before it and no marker; when every position is taken it keeps the first, so a label is never dropped."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ring = [(6, -4), (-6, -4), (0, 8), (0, -14), (6, 8), (-6, 8), (6, -14), (-6, -14)]
    offsets = ring + [(2 * dx, 2 * dy) for dx, dy in ring] + [(3 * dx, 3 * dy) for dx, dy in ring]
    markers = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    placed, annotations = [], []
    for i in sorted(range(len(texts)), key=lambda i: (ys[i], xs[i])):
        first = None
        for dx, dy in offsets:
            annotation = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                                     fontsize=fontsize, ha="left" if dx >= 0 else "right", va="center")
            box = annotation.get_window_extent(renderer).expanded(1.05, 1.15)
            clear = not any(box.overlaps(other) for other in placed) and not any(
                box.contains(mx, my) for j, (mx, my) in enumerate(markers) if j != i)
            if clear or first is None:
                if first is not None:
                    first[0].remove()
                first = (annotation, box)
                if clear:
                    break
            else:
                annotation.remove()
        placed.append(first[1])
        annotations.append(first[0])
    return annotations


def pareto(points: Sequence[dict], x: str = "bits_per_weight", y: str = "ppl", label: str = "label", ax=None,
           title: str = "", reference: float | None = None):
    """Scatter of methods by size and quality, the Pareto front (lower-left is better) drawn as a step line."""
    fig, ax = new_axes(ax)
    methods = list(dict.fromkeys(p.get("method", p[label]) for p in points))
    markers = "osD^vP*X<>"
    for i, method in enumerate(methods):
        chosen = [p for p in points if p.get("method", p[label]) == method]
        ax.scatter([p[x] for p in chosen], [p[y] for p in chosen], marker=markers[i % len(markers)], s=36,
                   label=method, zorder=3)
    front = pareto_front(points, x, y)
    if front:
        ax.step([p[x] for p in front], [p[y] for p in front], where="post", color=GRID, linewidth=1, zorder=2,
                label="Pareto front")
    if reference is not None:
        ax.axhline(reference, color=GRID, linestyle="--", linewidth=1, label="unquantized")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y)
    ax.set_yscale("log")
    ax.legend(fontsize=9, frameon=False)
    ax.set_title(title)
    label_points(ax, [p[x] for p in points], [p[y] for p in points], [str(p[label]) for p in points])
    return fig


def pareto_front(points: Sequence[dict], x: str = "bits_per_weight", y: str = "ppl") -> list[dict]:
    """The points no other point beats on both size and quality, by increasing size."""
    front, best = [], np.inf
    for p in sorted(points, key=lambda p: (p[x], p[y])):
        if p[y] < best:
            front.append(p)
            best = p[y]
    return front


# ---- GPTQ step-through ---------------------------------------------------------------------------------------
def gptq_step(weights: np.ndarray, order: Sequence[int], position: int, error: np.ndarray | None = None,
              hinv_row: np.ndarray | None = None, d: float | None = None, update: np.ndarray | None = None,
              gptq_loss: Sequence[float] = (), rtn_loss: Sequence[float] = (), blocksize: int | None = None,
              annotate: bool | None = None, title: str = ""):
    """One step of GPTQ on one layer, drawn to be read on a projector: 13.5 x 8.5 inches, 1080 x 680 px at the
    notebooks' 80 dpi, so that JupyterLab shows it unscaled in a 1280-px-wide window (a wider image is shrunk to
    the output area, and its fonts with it); every text 10 pt or more; the numbers of the cells only when the
    matrix is small enough for them to fit.

    Columns are drawn in the order GPTQ takes them (``order[k]``: the original index of the k-th column; with
    act-order that is not left to right), so the quantized columns are always the first ``position`` ones and
    the updates always land on the right.

    top:     the weights as GPTQ sees them now (``weights``, processing order), the column just rounded outlined
             in black, the quantized ones bracketed in orange, block boundaries dashed; beside it that column's
             rounding error ``error = w - q``, one bar per row;
    middle:  the row of the Cholesky factor of H^-1 that spreads it, ``hinv_row = U[i, i:]`` (its first entry is
             ``d = U_ii``);
    bottom:  the update pushed onto the remaining columns, ``update = -(error / d) outer U[i, i+1:]``, hatched
             where it lies beyond the current block (applied later, in one product: the lazy batch); beside it
             the running layer loss of GPTQ against RTN's as the same columns are rounded.
    """
    weights = np.asarray(weights, dtype=np.float64)
    rows, columns = weights.shape
    order = np.asarray(order)
    annotate = (rows <= 12 and columns <= 16) if annotate is None else annotate
    just_rounded = position - 1 if error is not None else None
    fig = plt.figure(figsize=(13.5, 8.5), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 0.6, 1], width_ratios=[4, 1.3])
    ax_w = fig.add_subplot(grid[0, 0])
    ax_e = fig.add_subplot(grid[0, 1], sharey=ax_w)
    ax_u = fig.add_subplot(grid[1, 0], sharex=ax_w)
    ax_text = fig.add_subplot(grid[1, 1])
    ax_d = fig.add_subplot(grid[2, 0], sharex=ax_w)
    ax_l = fig.add_subplot(grid[2, 1])
    big, normal = 12, 11

    limit = float(np.nanmax(np.abs(weights))) or 1.0
    ax_w.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    if position:  # an orange bar over the quantized columns (they are the first ones, in this order)
        ax_w.add_patch(plt.Rectangle((-0.5, -0.5), position, rows, fill=False, edgecolor=QUANTIZED, linewidth=4,
                                     clip_on=False, zorder=3))
    if just_rounded is not None:
        ax_w.add_patch(plt.Rectangle((just_rounded - 0.5, -0.5), 1, rows, fill=False, edgecolor="black",
                                     linewidth=2.5))
    ax_w.set_title(f"weights as GPTQ sees them: {position} of {columns} columns quantized (orange)"
                   + (", the one just rounded in black" if just_rounded is not None else ""), fontsize=big)
    ax_w.set_ylabel("row (output)", fontsize=normal)

    update = np.zeros_like(weights) if update is None else np.asarray(update, dtype=np.float64)
    bound = float(np.abs(update).max()) or 1.0
    ax_d.imshow(update, cmap="PuOr_r", vmin=-bound, vmax=bound, aspect="auto", interpolation="nearest")
    block_end = None
    if blocksize and just_rounded is not None:
        block_end = min((just_rounded // blocksize + 1) * blocksize, columns)
        if block_end < columns:
            ax_d.add_patch(plt.Rectangle((block_end - 0.5, -0.5), columns - block_end, rows, fill=False,
                                         hatch="//", edgecolor=GRID, linewidth=0))
    ax_d.set_title("update -(e / d) x U[i, i+1:] of the columns not yet quantized"
                   + (" (hatched: after this block, in one product)" if block_end and block_end < columns
                      else ""), fontsize=big)
    ax_d.set_ylabel("row (output)", fontsize=normal)
    ax_d.set_xlabel("column (input feature), in the order GPTQ quantizes them", fontsize=normal)
    if annotate:
        for (r, c), value in np.ndenumerate(weights):
            text = f"{value:.2f}"
            ax_w.text(c, r, "0.00" if float(text) == 0 else text, ha="center", va="center", fontsize=10,
                      color="white" if abs(value) > 0.6 * limit else "black")
        for (r, c), value in np.ndenumerate(update):
            if value != 0:
                text = f"{value:+.2f}"
                ax_d.text(c, r, "0" if float(text) == 0 else text, ha="center", va="center", fontsize=10,
                          color="white" if abs(value) > 0.6 * bound else "black")

    if blocksize and blocksize < columns:
        for ax in (ax_w, ax_u, ax_d):
            for boundary in range(blocksize, columns, blocksize):
                ax.axvline(boundary - 0.5, color=GRID, linestyle="--", linewidth=1.5)
    step = 1 if columns <= 32 else 4 if columns <= 64 else 8
    ticks = np.arange(0, columns, step)
    ax_d.set_xticks(ticks, [str(int(order[k])) for k in ticks])

    positions = np.arange(columns)
    if hinv_row is not None and just_rounded is not None:
        hinv_row = np.asarray(hinv_row, dtype=np.float64)
        at = positions[just_rounded:just_rounded + hinv_row.size]
        ax_u.bar(at[1:], hinv_row[1:], color=ORIGINAL, width=0.8)
        ax_u.bar(at[:1], hinv_row[:1], color="black", width=0.8)
        ax_u.axhline(0, color="black", linewidth=0.8)
        ax_u.set_title(f"row i = {just_rounded} of U, the Cholesky factor of H⁻¹ = UᵀU: d = U_ii = {d:.3g} "
                       "(black); U[i, i+1:] spreads e (blue)", fontsize=big)
    else:
        ax_u.set_title("row i of U, the Cholesky factor of H⁻¹, appears here after a step", fontsize=big)
    ax_u.set_ylabel("U[i, j]", fontsize=normal)
    ax_u.set_xlim(-0.5, columns - 0.5)

    if error is not None:
        error = np.asarray(error, dtype=np.float64)
        ax_e.barh(np.arange(rows), error, color=ERROR, height=0.8)
        ax_e.axvline(0, color="black", linewidth=0.8)
        if annotate:
            for r, value in enumerate(error):
                ax_e.text(value, r, f" {value:+.3f} ", ha="left" if value >= 0 else "right", va="center",
                          fontsize=10)
            reach = float(np.abs(error).max()) or 1.0
            ax_e.set_xlim(-2.2 * reach, 2.2 * reach)
        ax_e.set_title(f"rounding error e = w - q\nof column {int(order[just_rounded])}", fontsize=big)
    else:
        ax_e.set_title("rounding error e = w - q", fontsize=big)
    ax_e.tick_params(labelleft=False)
    ax_e.set_xlabel("e (per row)", fontsize=normal)

    ax_text.axis("off")
    lines = ["e: how far the column's weights", "moved to reach the grid.",
             "d and U[i, i+1:]: how the layer's", "inputs let the columns not yet",
             "quantized make up for it."]
    if error is not None:
        lines += ["", f"column {int(order[just_rounded])}: |e| = {float(np.linalg.norm(error)):.3g}, d = {d:.3g}"]
    ax_text.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=normal, transform=ax_text.transAxes)

    rtn_loss, gptq_loss = np.asarray(rtn_loss, dtype=np.float64), np.asarray(gptq_loss, dtype=np.float64)
    if rtn_loss.size:
        ax_l.plot(np.arange(1, rtn_loss.size + 1), rtn_loss, color=GRID, linewidth=2, label="RTN")
    if gptq_loss.size:
        ax_l.plot(np.arange(1, gptq_loss.size + 1), gptq_loss, color=QUANTIZED, linewidth=2.5, label="GPTQ")
    ax_l.set_xlim(0, max(columns, 1))
    ax_l.set_xlabel("columns quantized", fontsize=normal)
    ax_l.set_title("layer loss ||WX - ŴX||² / n", fontsize=big)
    ax_l.legend(fontsize=normal, frameon=False, loc="upper left")
    for ax in (ax_w, ax_e, ax_u, ax_d, ax_l):
        ax.tick_params(labelsize=10)
        ax.grid(False)
    ax_l.grid(alpha=0.3)
    ax_w.tick_params(labelbottom=False)
    ax_u.tick_params(labelbottom=False)
    if title:
        fig.suptitle(title, fontsize=13)
    return fig


# ---- GGUF ------------------------------------------------------------------------------------------------------
ROLE_COLOURS = {"scale": "#e15759", "min": "#f28e2b", "sub-block scales": "#edc948", "quants": "#4e79a7",
                "high bits": "#76b7b2"}


def block_bytes(roles: Sequence[str], block: np.ndarray | None = None, ax=None, title: str = "",
                highlight: Sequence[int] = (), per_row: int = 16):
    """The bytes of one ggml block as a grid of cells coloured by role (scale, min, sub-block scales, quants,
    high bits), with each byte's value in hex when ``block`` is given; ``highlight`` outlines some bytes."""
    n = len(roles)
    rows = -(-n // per_row)
    fig, ax = new_axes(ax, figsize=(8, 0.42 * rows + 0.9))
    for i, role in enumerate(roles):
        row, col = divmod(i, per_row)
        ax.add_patch(plt.Rectangle((col, -row), 0.94, 0.9, facecolor=ROLE_COLOURS.get(role, GRID), alpha=0.85,
                                   linewidth=2.0 if i in highlight else 0, edgecolor="black"))
        if block is not None:
            ax.text(col + 0.47, -row + 0.45, f"{int(block[i]):02x}", ha="center", va="center", fontsize=7, color="white")
    for k, (role, colour) in enumerate((r, c) for r, c in ROLE_COLOURS.items() if r in set(roles)):
        ax.add_patch(plt.Rectangle((k * 3.3, 1.25), 0.5, 0.5, color=colour))
        ax.text(k * 3.3 + 0.6, 1.5, role, va="center", fontsize=8)
    ax.set_xlim(-0.2, per_row + 0.2)
    ax.set_ylim(-rows + 0.8, 2.0)
    ax.axis("off")
    ax.set_title(title or f"{n} bytes")
    return fig


def grid_points(values: np.ndarray, ax=None, title: str = ""):
    """The points of a lattice i-quant's grid (one row of 8 or 4 magnitudes each), sorted by length, as a strip
    of cells coloured by magnitude: the grid keeps the patterns real weight groups fall near, mostly small ones."""
    values = np.asarray(values, dtype=np.float32)
    order = np.lexsort((np.arange(len(values)), (values.astype(np.float64) ** 2).sum(axis=1)))
    fig, ax = new_axes(ax, figsize=(10, 2.6))
    image = ax.imshow(values[order].T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel(f"grid point (sorted by length; {len(values)} in all)")
    ax.set_ylabel("coordinate")
    ax.set_yticks(range(values.shape[1]))
    fig.colorbar(image, ax=ax, label="magnitude", fraction=0.03, pad=0.01)
    ax.set_title(title)
    return fig


# ---- below 3 bits: scalar grids, vector codebooks, lattices, incoherence, beam search ------------------------
def scalar_grids(weights: np.ndarray, rounded: dict, ax=None, title: str = ""):
    """One strip per grid (``rounded``: label -> the weights after rounding): every weight a blue dot, the levels
    it used orange ticks, a grey line from each weight to its level (the error), so 4 levels against 16 shows."""
    weights = np.asarray(weights, dtype=np.float64).ravel()
    fig, ax = new_axes(ax, figsize=(9, 0.9 + 0.8 * len(rounded)))
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, weights.size)  # spreads the dots, fixed for redraws
    for row, (label, values) in enumerate(rounded.items()):
        values = np.asarray(values, dtype=np.float64).ravel()
        y = -row
        ax.plot(np.stack([weights, values]), np.stack([y + jitter, np.full_like(values, y + 0.3)]), color=GRID,
                linewidth=0.5, alpha=0.6)
        ax.scatter(weights, y + jitter, s=10, color=ORIGINAL, zorder=3)
        ax.vlines(np.unique(values), y + 0.25, y + 0.4, color=QUANTIZED, linewidth=2.5, zorder=4)
        ax.text(weights.min(), y + 0.42, f"{label}: {np.unique(values).size} levels used", fontsize=9, va="bottom")
    ax.set_yticks([])
    ax.set_ylim(-len(rounded) + 0.6, 0.75)
    ax.set_xlabel("weight value")
    ax.set_title(title, fontsize=10)
    return fig


def codebook_cells(points: np.ndarray, codebooks: dict, title: str = ""):
    """2-D points coloured by their nearest codeword, one panel per codebook (label -> K x 2 codewords, black
    crosses), with the mean squared distance to the nearest codeword in each panel's title."""
    points = np.asarray(points, dtype=np.float64)
    fig, axes = plt.subplots(1, len(codebooks), figsize=(4.2 * len(codebooks), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, (label, codewords) in zip(axes[0], codebooks.items()):
        codewords = np.asarray(codewords, dtype=np.float64)
        distances = ((points[:, None, :] - codewords[None, :, :]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1)
        ax.scatter(points[:, 0], points[:, 1], c=nearest % 20, cmap="tab20", s=4, alpha=0.6)
        ax.scatter(codewords[:, 0], codewords[:, 1], marker="x", color="black", s=40, zorder=3)
        ax.set_title(f"{label}\nmean squared error {distances.min(axis=1).mean() / 2:.4f} per weight", fontsize=10)
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=10)
    return fig


def coxeter_plane() -> np.ndarray:
    """A 2 x 8 orthonormal basis of E8's Coxeter plane: projected onto it, E8's 240 roots fall on 8 circles of 30
    (the usual picture of E8). The plane is spanned by the real and imaginary parts of an eigenvector, for the
    eigenvalue exp(2 pi i / 30), of the product of the reflections in the 8 simple roots (Bourbaki's)."""
    simple = np.zeros((8, 8))
    simple[0] = 0.5 * np.array([1, -1, -1, -1, -1, -1, -1, 1])
    simple[1, :2] = 1
    for i in range(2, 8):
        simple[i, i - 2], simple[i, i - 1] = -1, 1
    coxeter = np.eye(8)
    for root in simple:  # every simple root has squared length 2: s(x) = x - (x . root) root
        coxeter = (np.eye(8) - np.outer(root, root)) @ coxeter
    values, vectors = np.linalg.eig(coxeter)
    v = vectors[:, np.argmin(np.abs(values - np.exp(2j * np.pi / 30)))]
    basis, _ = np.linalg.qr(np.stack([v.real, v.imag], axis=1))
    return basis.T


def lattice_projection(points: np.ndarray, basis: np.ndarray, ax=None, title: str = "", highlight=None):
    """Points of 8 dimensions (n x 8) projected onto a plane (``basis``: 2 x 8); ``highlight`` (m x 8) drawn on top."""
    fig, ax = new_axes(ax, figsize=(5, 5))
    xy = np.asarray(points, dtype=np.float64) @ basis.T
    ax.scatter(xy[:, 0], xy[:, 1], s=2 if len(xy) > 2000 else 12, color=ORIGINAL, alpha=0.25 if len(xy) > 2000 else 0.8,
               linewidths=0)
    if highlight is not None:
        hx = np.asarray(highlight, dtype=np.float64) @ basis.T
        ax.scatter(hx[:, 0], hx[:, 1], s=14, color=QUANTIZED, zorder=3)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return fig


def incoherence_histograms(before: np.ndarray, after: np.ndarray, ax=None, title: str = ""):
    """Histograms of |w| / median |w| of a weight before and after a rotation (log count), each labelled with its
    max / median: the rotation pulls the tail in."""
    fig, ax = new_axes(ax, figsize=(8, 3.6))
    for values, label, colour in ((before, "before", ORIGINAL), (after, "after the rotation", QUANTIZED)):
        ratio = np.abs(np.asarray(values, dtype=np.float64)).ravel()
        ratio = ratio / np.median(ratio)
        ax.hist(ratio, bins=150, color=colour, alpha=0.6, label=f"{label}: max / median {ratio.max():.1f}")
    ax.set_yscale("log")
    ax.set_xlabel("|w| / median |w|")
    ax.set_ylabel("count")
    ax.legend(fontsize=9, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig


def beam_steps(scores: Sequence[np.ndarray], kept: Sequence[np.ndarray], best: float | None = None, title: str = ""):
    """One panel per step of a beam search: every candidate's loss (sorted, grey), the ones the beam keeps
    (orange); ``best``, the exhaustive optimum, as a dashed line."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5 * len(scores), 3.4), constrained_layout=True, squeeze=False)
    for step, (ax, score, keep) in enumerate(zip(axes[0], scores, kept)):
        score = np.asarray(score, dtype=np.float64).ravel()
        order = np.argsort(score)
        rank = np.empty_like(order)
        rank[order] = np.arange(score.size)
        ax.scatter(np.arange(score.size), score[order], s=4, color=GRID, label=f"{score.size} candidates")
        ax.scatter(rank[keep], score[keep], s=24, color=QUANTIZED, zorder=3, label=f"kept: {len(keep)}")
        if best is not None:
            ax.axhline(best, color=ERROR, linestyle="--", linewidth=1, label="exhaustive best")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(-0.5, score.size)
        ax.set_xlabel("candidate (sorted by loss)")
        ax.set_ylabel("group loss")
        ax.set_title(f"step {step + 1}: table {step + 1}'s code", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- AWQ and SmoothQuant -------------------------------------------------------------------------------------
def alpha_curve(alphas: Sequence[float], losses: Sequence[float], best_alpha: float | None = None,
                rtn_loss: float | None = None, ax=None, title: str = "", ylabel: str = "output error"):
    """A loss against the scaling exponent alpha: the curve AWQ's grid search walks, with its minimum marked and
    RTN's loss as a dashed line (alpha = 0 gives s = 1, which is RTN)."""
    fig, ax = new_axes(ax, figsize=(6.5, 3.4))
    ax.plot(alphas, losses, "o-", color=QUANTIZED, markersize=4, label="scaled, then rounded")
    if rtn_loss is not None:
        ax.axhline(rtn_loss, color=GRID, linestyle="--", linewidth=1, label="RTN")
    if best_alpha is not None:
        best = float(np.asarray(losses)[list(alphas).index(best_alpha)])
        ax.plot([best_alpha], [best], "*", color=ERROR, markersize=14, label=f"searched alpha = {best_alpha:g}")
    ax.set_xlabel("alpha   (s = mean|x|^alpha)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title)
    return fig


def channel_peaks_pair(activation_peaks: np.ndarray, weight_peaks: np.ndarray, highlight: Sequence[int] = (),
                       axes=None, title: str = ""):
    """Two bar charts side by side: max |x_j| per input channel of the activations and max |w_j| per input
    channel (column) of the weights; ``highlight`` channels (e.g. planted outliers) in red."""
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), constrained_layout=True)
    else:
        fig = axes[0].figure
    marked = set(int(j) for j in highlight)
    for ax, peaks, name in ((axes[0], activation_peaks, "activations  max|X_j / s_j|"),
                            (axes[1], weight_peaks, "weights  max|W_j s_j|")):
        peaks = np.asarray(peaks, dtype=np.float64)
        colours = [ERROR if j in marked else ORIGINAL for j in range(peaks.size)]
        ax.bar(np.arange(peaks.size), peaks, width=1.0, color=colours)
        ax.set_xlabel("input channel j")
        ax.set_title(f"{name}: max/median {peaks.max() / np.median(peaks):.1f}", fontsize=10)
    fig.suptitle(title)
    return fig


# ---- activation outliers -------------------------------------------------------------------------------------
def peak_ratio_by_block(ratios: dict, ax=None, title: str = "", reference: float | None = None,
                        reference_label: str = ""):
    """Per transformer block (x = 0, 1, ...), the max/median channel-peak ratio of each kind of linear input:
    one marked line per entry of ``ratios`` (label -> one ratio per block), on a log axis. ``reference``: a dashed
    horizontal line (e.g. another model's worst ratio)."""
    fig, ax = new_axes(ax, figsize=(9, 4.2))
    markers = "osD^vP*X"
    for i, (label, values) in enumerate(ratios.items()):
        values = np.asarray(values, dtype=np.float64)
        ax.plot(np.arange(values.size), values, marker=markers[i % len(markers)], markersize=5, linewidth=1.4,
                label=label)
    if reference is not None:
        ax.axhline(reference, color=GRID, linestyle="--", linewidth=1, label=reference_label or None)
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("max / median channel peak")
    blocks = max(len(values) for values in ratios.values())
    ax.set_xticks(range(0, blocks, 2 if blocks > 16 else 1))
    ax.grid(True, which="major", axis="y", color=GRID, alpha=0.3)
    ax.legend(fontsize=9, frameon=False)
    ax.set_title(title)
    return fig


def channel_peak_profile(peaks: np.ndarray, ax=None, title: str = "", threshold: float | None = None,
                         top: int = 2):
    """max_t |x_tj| of every input channel j of one layer, by channel index, on a log axis: the median channel
    as a dashed line, an absolute ``threshold`` (LLM.int8()'s) as an orange line, and the ``top`` highest channels
    in red, labelled with their index."""
    peaks = np.asarray(peaks, dtype=np.float64)
    fig, ax = new_axes(ax, figsize=(9, 3.6))
    ax.scatter(np.arange(peaks.size), peaks, s=4, color=ORIGINAL, label="channel peak")
    highest = np.argsort(peaks)[::-1][:top]
    ax.scatter(highest, peaks[highest], s=30, color=ERROR, zorder=3, label=f"the {top} highest")
    for j in highest:
        right_half = j > peaks.size / 2  # label towards the middle, so that it stays inside the axes
        ax.annotate(f"channel {j}: {peaks[j]:.4g}", (j, peaks[j]), fontsize=8, xytext=(-6 if right_half else 6, -3),
                    textcoords="offset points", ha="right" if right_half else "left", va="top")
    ax.axhline(float(np.median(peaks)), color=GRID, linestyle="--", linewidth=1,
               label=f"median channel: {np.median(peaks):.2g}")
    if threshold is not None:
        ax.axhline(threshold, color=QUANTIZED, linewidth=1.2, label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_ylim(top=peaks.max() * 4)
    ax.set_xlabel("input channel j")
    ax.set_ylabel("max over tokens |x_j|")
    ax.legend(fontsize=8, frameon=False, loc="upper left", ncol=2)
    ax.set_title(title)
    return fig


# ---- perplexity with its noise -------------------------------------------------------------------------------
def point_label(point: dict) -> str:
    """A sweep point's name on a figure: its "label", else its format and group ("int4 g64")."""
    if point.get("label"):
        return str(point["label"])
    return " ".join(str(part) for part in (point.get("format", ""), point.get("group", "")) if part).strip()


def perplexity_points(points: Sequence[dict], reference: float, reference_stderr: float = 0.0, chosen: dict | None = None,
                      ax=None, title: str = "", ceiling: float = 10.0, labels: bool = False):
    """Perplexity against bits per weight, one marker per method, each point with its ± one standard error as
    an error bar; the float model as a dashed line in a grey band of ± its standard error; ``chosen`` circled.
    A broken model (perplexity above ``ceiling`` times float's) is drawn as a triangle on the top edge, labelled
    with its value, so that it does not squash the others into a line.

    ``points`` are ``qtutor.eval.sweep.evaluate`` points ("method", "bits_per_weight", "ppl", "ppl_stderr");
    ``labels=True`` writes each working point's name (:func:`point_label`) beside it, placed so that no two
    overlap."""
    fig, ax = new_axes(ax, figsize=(10, 5.6) if labels else (8, 4.2))
    top = reference * ceiling
    methods = list(dict.fromkeys(str(p["method"]) for p in points))
    markers = "osD^vP*X"
    for i, method in enumerate(methods):
        mine = sorted((p for p in points if str(p["method"]) == method), key=lambda p: p["bits_per_weight"])
        shown = [p for p in mine if p["ppl"] <= top]
        errorbar = ax.errorbar([p["bits_per_weight"] for p in shown], [p["ppl"] for p in shown],
                               yerr=[p.get("ppl_stderr", 0.0) for p in shown], fmt=markers[i % len(markers)],
                               markersize=6, capsize=3, linestyle="none", label=method.upper(), zorder=3)
        for p in mine:
            if p["ppl"] > top:
                ax.scatter([p["bits_per_weight"]], [top], marker="^", s=60, color=errorbar[0].get_color(), zorder=3)
                ax.annotate(f"{p['ppl']:.3g}", (p["bits_per_weight"], top), fontsize=8, xytext=(6, -4),
                            textcoords="offset points", va="top")
    ax.axhspan(reference - reference_stderr, reference + reference_stderr, color=GRID, alpha=0.15, linewidth=0)
    ax.axhline(reference, color=GRID, linestyle="--", linewidth=1, label=f"float {reference:.2f} ± {reference_stderr:.2f}")
    if chosen is not None:
        ax.scatter([chosen["bits_per_weight"]], [min(chosen["ppl"], top)], s=260, facecolors="none", edgecolors=ERROR,
                   linewidths=2, zorder=4, label="this setting")
    ax.set_yscale("log")
    ax.set_ylim(top=top * 1.6)
    ax.set_xlabel("bits per weight (scales and zero points included)")
    ax.set_ylabel("perplexity (log scale)")
    ax.grid(True, which="major", color=GRID, alpha=0.25)
    ax.legend(fontsize=9, frameon=False, loc="upper right")
    ax.set_title(title, fontsize=10)
    if labels:
        working = [p for p in points if p["ppl"] <= top]
        label_points(ax, [p["bits_per_weight"] for p in working], [p["ppl"] for p in working],
                     [point_label(p) for p in working], fontsize=9)
    return fig


def layer_map(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str = "",
              ratio: bool = False, marked: Sequence[tuple[int, int]] = (), colorbar_label: str = ""):
    """A layers x projections grid of one number per layer (e.g. output error), readable on a projector.

    ``ratio=False``: a log colour scale from the smallest to the largest value; ``ratio=True``: a diverging scale
    centred on 1 (blue below: better than the reference, red above). ``marked`` cells (row, column), e.g. the
    worst layers, are outlined and carry their value."""
    from matplotlib.colors import LogNorm, TwoSlopeNorm

    data = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.1 * data.shape[1] + 2.4, 0.26 * data.shape[0] + 1.6), constrained_layout=True)
    if ratio:
        spread = max(float(np.nanmax(np.abs(np.log(data[data > 0])))), 1e-3)
        norm, cmap = TwoSlopeNorm(vcenter=1.0, vmin=float(np.exp(-spread)), vmax=float(np.exp(spread))), "RdBu_r"
    else:
        positive = data[data > 0]
        norm, cmap = LogNorm(vmin=float(positive.min()), vmax=float(positive.max())), "magma_r"
    image = ax.imshow(data, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, fontsize=10)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=9)
    for row, column in marked:
        ax.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
        ax.text(column, row, f"{data[row, column]:.3g}", ha="center", va="center", fontsize=9, color="black",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    ax.set_title(title, fontsize=11)
    return fig


# ---- speed ---------------------------------------------------------------------------------------------------
def roofline_chart(points: Sequence[dict], bandwidth: float, peak: float, ax=None, title: str = "",
                   unit: float = 1e9):
    """The roofline: attainable flop/s = min(peak, intensity × bandwidth) on log-log axes, with the measured
    ``points`` (``label``, ``intensity`` flop per weight byte, ``flops_per_s``) on it. A point under the slope
    wastes bandwidth (a kernel doing extra work, or none reading the format); above it, its bytes came from cache."""
    fig, ax = new_axes(ax, figsize=(7.5, 4.2))
    ridge = peak / bandwidth
    lowest = min([p["intensity"] for p in points] + [ridge]) / 4
    highest = max([p["intensity"] for p in points] + [ridge]) * 4
    intensities = np.geomspace(lowest, highest, 200)
    ax.plot(intensities, np.minimum(peak, intensities * bandwidth) / unit, color=GRID, linewidth=2)
    ax.annotate(f"memory: {bandwidth / 1e9:.3g} GB/s", (lowest * 1.3, lowest * 1.3 * bandwidth / unit),
                fontsize=8, color=GRID, va="bottom")
    ax.annotate(f"compute: {peak / 1e9:.3g} Gflop/s", (ridge * 1.2, peak / unit),
                fontsize=8, color=GRID, va="bottom")
    artists = []
    for i, point in enumerate(points):
        artists.append(ax.plot(point["intensity"], point["flops_per_s"] / unit, "o", color=f"C{i % 10}",
                               label=point["label"], markersize=7)[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop per byte of weights)")
    ax.set_ylabel("Gflop/s" if unit == 1e9 else "flop/s")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.set_title(title)
    return fig


# ---- training with quantization ------------------------------------------------------------------------------
def ste_rounding(q_max: int = 7, ax=None, title: str = ""):
    """Two panels: the rounding staircase round(x) clamped to [0, q_max] against the identity the straight-through
    estimator pretends it is, and their gradients: the staircase's is 0 almost everywhere (a spike at every
    half), the STE's 1 inside the range and 0 where the clamp cuts."""
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    fig = ax[0].figure
    x = np.linspace(-1.5, q_max + 1.5, 2001)
    staircase = np.clip(np.round(x), 0, q_max)
    ax[0].plot(x, np.clip(x, 0, q_max), color=ORIGINAL, linestyle="--", label="what backward pretends: clamp(x)")
    ax[0].plot(x, staircase, color=QUANTIZED, label="forward: clamp(round(x))")
    ax[0].set_xlabel("x = w / s + z")
    ax[0].set_ylabel("code")
    ax[0].legend(fontsize=8, frameon=False)
    inside = (x >= 0) & (x <= q_max)
    ax[1].plot(x, inside.astype(float), color=ORIGINAL, label="STE: 1 inside the range, 0 outside")
    ax[1].plot(x, np.zeros_like(x), color=QUANTIZED, label="true derivative: 0 (undefined at the halves)")
    for half in np.arange(0.5, q_max, 1.0):
        ax[1].plot([half], [0], "|", color=QUANTIZED, markersize=10)
    ax[1].set_ylim(-0.2, 1.3)
    ax[1].set_xlabel("x")
    ax[1].set_ylabel("d code / dx")
    ax[1].legend(fontsize=8, frameon=False, loc="upper right")
    ax[0].set_title(title)
    return fig


def training_replay(losses: Sequence[float], checkpoints: Sequence[dict], index: int, bins: Sequence[float],
                    baselines: dict | None = None, axes=None, title: str = ""):
    """A training run replayed at checkpoint ``index``: the loss per step (a line) with the checkpoint marked;
    perplexity ± standard error at every checkpoint so far, with ``baselines`` ({label: perplexity}, e.g. RTN,
    GPTQ, float) as dashed lines; and the checkpoint's histogram of one layer's weights in units of their step
    (``checkpoints[i]["codes"]`` over ``bins``), the grid's integers marked: QAT pulls weights onto them."""
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), constrained_layout=True)
    fig = axes[0].figure
    point = checkpoints[index]
    steps = np.arange(1, len(losses) + 1)
    axes[0].plot(steps, losses, color=GRID, linewidth=0.8)
    shown = steps <= point["step"]
    axes[0].plot(steps[shown], np.asarray(losses, dtype=float)[shown], color=QUANTIZED)
    axes[0].axvline(point["step"], color=ERROR, linewidth=0.8)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (nats/token)")
    so_far = checkpoints[: index + 1]
    axes[1].errorbar([c["step"] for c in so_far], [c["ppl"] for c in so_far], [c["ppl_stderr"] for c in so_far],
                     fmt="o-", color=QUANTIZED, capsize=3, label="trained")
    for i, (label, value) in enumerate((baselines or {}).items()):
        axes[1].axhline(value, color=f"C{i}", linestyle="--", linewidth=1, label=label)
    axes[1].set_xlim(-1, checkpoints[-1]["step"] + 1)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("test perplexity")
    axes[1].legend(fontsize=7, frameon=False)
    axes[0].set_title(title)
    if "codes" not in point:  # a run without a weight histogram (QLoRA trains adapters, not the grid)
        axes[2].set_visible(False)
        return fig
    edges = np.asarray(bins, dtype=float)
    axes[2].stairs(point["codes"], edges, fill=True, color=QUANTIZED, alpha=0.7)
    for level in range(int(np.ceil(edges[0])), int(np.floor(edges[-1])) + 1):
        axes[2].axvline(level, color=GRID, linewidth=0.5)
    axes[2].set_xlabel("weight / step + zero (the grid: the integers)")
    axes[2].set_ylabel("weights")
    axes[2].set_title(f"step {point['step']}", fontsize=9)
    return fig


# ---- low-precision float formats on a model (notebook 11) ----------------------------------------------------
def changes_with_noise(rows: Sequence[dict], ax=None, title: str = "", groups: Sequence[str] | None = None):
    """Each row's perplexity change from float in % (``delta_pct``) as a dot, with its paired standard error
    (``delta_pct_stderr``) as a thick bar of ± 1 and a thin bar of ± 2, one line per row (``label``) from the top
    down; zero (the float model) as a dashed line. A row whose ± 2 bar crosses zero is inside the noise.
    ``groups``: a caption per row ("weights only", "W4A4") shown as the dot's colour."""
    fig, ax = new_axes(ax, figsize=(8, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    captions = list(groups) if groups is not None else [""] * len(rows)
    colours = {caption: f"C{i}" for i, caption in enumerate(dict.fromkeys(captions))}
    for yi, row, caption in zip(y, rows, captions):
        change, se = float(row["delta_pct"]), float(row["delta_pct_stderr"])
        colour = colours[caption]
        ax.plot([change - 2 * se, change + 2 * se], [yi, yi], color=colour, linewidth=1, alpha=0.6)
        ax.plot([change - se, change + se], [yi, yi], color=colour, linewidth=4, alpha=0.6)
        ax.plot([change], [yi], "o", color=colour, markersize=6, label=caption or None)
    ax.axvline(0.0, color=GRID, linestyle="--", linewidth=1)
    ax.set_yticks(y, [str(row["label"]) for row in rows])
    ax.set_xlabel("perplexity change from float, % (bars: ± 1 and ± 2 paired standard errors)")
    handles, labels = ax.get_legend_handles_labels()
    if any(labels):
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, axis="x", color=GRID, alpha=0.25)
    ax.set_title(title, fontsize=10)
    return fig


def block_values_before_after(before: np.ndarray, after: np.ndarray, grid: np.ndarray | None = None, ax=None,
                              title: str = "", bins: int = 48, labels: Sequence[str] = ("before", "after")):
    """Two histograms of the same blocks' values on one axis (``before`` in blue, ``after`` in orange), each block
    divided by its own max|value| / max(grid), so that the values sit on the element grid (grey lines) as they
    would under a max-scaled block format: E2M1's 0, ±0.5, ..., ±6 for FP4. ``before``, ``after``: blocks as rows."""
    fig, ax = new_axes(ax, figsize=(8, 3.6))
    top = 6.0 if grid is None else float(np.max(np.abs(grid)))
    edges = np.linspace(-top, top, bins + 1)
    for values, colour, label in ((before, ORIGINAL, labels[0]), (after, QUANTIZED, labels[1])):
        values = np.asarray(values, dtype=np.float64)
        scaled = values / (np.abs(values).max(axis=1, keepdims=True) / top)
        crest = np.median(np.abs(values).max(axis=1) / np.sqrt(np.mean(values**2, axis=1)))
        ax.hist(scaled.ravel(), bins=edges, color=colour, alpha=0.55, label=f"{label}: median max/RMS {crest:.2f}")
    if grid is not None:
        for g in np.unique(np.asarray(grid, dtype=np.float64)):
            ax.axvline(g, color=GRID, linewidth=0.6)
    ax.set_xlabel(f"value / (block max / {top:g})  (grey: the element grid)")
    ax.set_ylabel("values")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig
