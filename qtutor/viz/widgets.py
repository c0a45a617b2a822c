"""Widgets: thin ipywidgets apps over the pure functions in :mod:`qtutor.viz.figures`.

One recipe for every app (NOTEBOOKS.md):
  * controls built explicitly, wired with ``observe(names="value")``; sliders with ``continuous_update=False``;
  * ``compute(**settings)`` is pure and cached by the settings, so moving back to a setting is instant;
  * ``draw(state)`` makes a figure with :mod:`qtutor.viz.figures` and shows it in the app's ``Output``;
  * the last computed numbers stay in ``app.state`` — tests set ``control.value`` and assert on ``app.state``
    (no browser needed); a failing setting shows its message instead of a traceback, and the last value wins.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np

from qtutor.metrics import layer_output_error, relative_error  # the one metric (relative_error answers here too)
from qtutor.viz import figures


def _widgets():
    try:
        import ipywidgets
    except ImportError as error:  # the course extras are missing
        raise ImportError("widgets need ipywidgets: pip install 'qtutor[lab]'") from error
    return ipywidgets


class App:
    """Base of every app: controls -> compute (cached) -> state -> draw into an Output."""

    title = ""

    def __init__(self, controls: dict[str, Any]):
        widgets = _widgets()
        self.controls = controls
        self.output = widgets.Output()
        self.message = widgets.HTML("")
        self.summary = widgets.Label("")  # one line of text that states the result (what a reader, or a test, reads)
        self.state: dict = {}
        self.figure = None
        self._cache: dict = {}
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.refresh()

    # subclasses implement these two
    def compute(self, **settings) -> dict:
        raise NotImplementedError

    def draw(self, state: dict):
        raise NotImplementedError

    def describe(self, state: dict) -> str:
        """One line stating the result for the current settings (optional)."""
        return ""

    def settings(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, change) -> None:
        self.refresh()

    def refresh(self) -> None:
        settings = self.settings()
        key = tuple(sorted(settings.items()))
        try:
            if key not in self._cache:
                self._cache[key] = self.compute(**settings)
            self.state = dict(self._cache[key], settings=settings)
            self.message.value = ""
            self.summary.value = self.describe(self.state)
        except (ValueError, TypeError) as error:  # a setting the method refuses: say why, keep the last figure
            self.state = {"error": str(error), "settings": settings}
            self.message.value = f"<span style='color:#d62728'>{error}</span>"
            return
        self._show(self.draw(self.state))

    def _show(self, figure) -> None:
        from IPython.display import display

        if self.figure is not None:
            plt.close(self.figure)
        self.figure = figure
        with self.output:
            self.output.clear_output(wait=True)
            display(figure)
        plt.close(figure)  # shown once, in the Output; not again by the inline backend

    @property
    def widget(self):
        widgets = _widgets()
        header = [widgets.HTML(f"<b>{self.title}</b>")] if self.title else []
        return widgets.VBox([*header, widgets.HBox(list(self.controls.values())), self.summary, self.message,
                             self.output])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def slider(description: str, value: int, low: int, high: int, step: int = 1):
    return _widgets().IntSlider(value=value, min=low, max=high, step=step, description=description,
                                continuous_update=False, style={"description_width": "initial"})


def dropdown(description: str, options, value):
    return _widgets().Dropdown(options=options, value=value, description=description,
                               style={"description_width": "initial"})


def checkbox(description: str, value: bool):
    return _widgets().Checkbox(value=value, description=description, indent=False)


# --------------------------------------------------------------------------------------------------------------
# Notebook 01: number formats
# --------------------------------------------------------------------------------------------------------------
def format_summary(name: str, value: float) -> dict:
    """What a format does to one number, and its grid: the facts the format explorer shows."""
    from qtutor import formats

    fmt = formats.get(name)
    x = np.array([value], dtype=np.float32)
    if fmt.family == "minifloat":
        code = int(fmt.cast(x)[0])
        stored = float(fmt.values(np.array([code]))[0])
        bits = [(code >> i) & 1 for i in range(fmt.bits - 1, -1, -1)]
    else:  # integer / block formats: the element grid, no scale (a value is its own nearest grid point)
        grid = fmt.grid
        stored = float(grid[np.argmin(np.abs(grid - value))])
        code, bits = None, None
    positive = fmt.grid[fmt.grid > 0]
    return {"name": name, "grid": fmt.grid, "stored": stored, "error": stored - value, "code": code, "bits": bits,
            "levels": int(fmt.grid.size), "max": float(fmt.max_value),
            "smallest_positive": float(positive.min()) if positive.size else float("nan")}


def grid_near(grid: np.ndarray, value: float, count: int = 16) -> np.ndarray:
    """The ``count`` finite grid values nearest to ``value`` (all of them when the grid is that small): what a
    16-bit format's 65,000 values look like around one number, where its whole number line is a grey band."""
    finite = np.sort(grid[np.isfinite(grid)])
    if finite.size <= count:
        return finite
    where = int(np.clip(np.searchsorted(finite, np.clip(value, finite[0], finite[-1])), 0, finite.size))
    start = int(np.clip(where - count // 2, 0, finite.size - count))
    return finite[start:start + count]


class FormatExplorer(App):
    """Pick a format and a number: the format's representable values and where the number lands. Formats of
    more than 256 values (FP16, BF16) show the 16 values around the number, with their spacing."""

    title = "Number formats: pick one, type a number, see where it lands"
    WHOLE_GRID = 256  # above this many values, zoom in on the number

    def __init__(self, names: list[str] | None = None, name: str = "fp8_e4m3", value: float = 0.3):
        from qtutor import formats

        names = names or [n for n in formats.names() if formats.get(n).bits <= 16]
        super().__init__({
            "name": dropdown("format", names, name),
            "value": _widgets().FloatText(value=value, description="x =", style={"description_width": "initial"}),
        })

    def compute(self, name: str, value: float) -> dict:
        return format_summary(name, float(value))

    def describe(self, state: dict) -> str:
        value, stored = state["settings"]["value"], state["stored"]
        if not np.isfinite(stored):
            return f"{value:g} overflows {state['name']} (largest finite value {state['max']:g}): stored as {stored:g}"
        if stored == 0 and value != 0:
            return (f"{value:g} underflows {state['name']} (smallest positive value "
                    f"{state['smallest_positive']:.3g}): stored as 0")
        return f"{value:g} is stored as {stored:.8g} (error {state['error']:+.3g}, {state['error'] / value:+.2%})"

    def draw(self, state: dict):
        value, stored, grid = state["settings"]["value"], state["stored"], state["grid"]
        zoom = grid.size > self.WHOLE_GRID
        shown = grid_near(grid, value) if zoom else grid
        marks = {f"x = {value:g}": [value]}
        if np.isfinite(stored):
            marks[f"stored {stored:.6g}"] = [stored]
        where = (f"the 16 of {state['levels']:,} values nearest x (spacing {np.diff(shown).max():.3g})"
                 if zoom else f"{state['levels']} values")
        return figures.number_line(shown, log=False if zoom else None, highlight=marks,
                                   title=f"{state['name']}: {where}, max {state['max']:.4g}")


# --------------------------------------------------------------------------------------------------------------
# Notebook 02: affine quantization and granularity
# --------------------------------------------------------------------------------------------------------------
class AffinePlayground(App):
    """Bit-width, symmetric/asymmetric and group size on one weight matrix: the histogram of the first group's
    weights with that group's grid overlaid, and the error they cost over the whole matrix."""

    title = "Affine quantization: move the bit-width, the zero point and the group size"

    def __init__(self, W: np.ndarray, bits: int = 4, sym: bool = True, group_size: int = -1):
        self.W = np.asarray(W, dtype=np.float32)
        sizes = [("per tensor", 0), ("per channel", -1)] + [
            (f"groups of {g}", g) for g in (256, 128, 64, 32) if self.W.shape[-1] % g == 0 and g < self.W.shape[-1]]
        super().__init__({
            "bits": slider("bits", bits, 2, 8),
            "sym": checkbox("symmetric", sym),
            "group_size": dropdown("scale per", sizes, group_size),
        })

    def compute(self, bits: int, sym: bool, group_size: int) -> dict:
        return affine_summary(self.W, bits, sym, group_size)

    def describe(self, state: dict) -> str:
        return f"MSE {state['mse']:.3g} at {state['bits_per_weight']:.3f} bits/weight"

    def draw(self, state: dict):
        group = state["first_group"]
        return figures.weight_histogram(
            group, state["grid_first_group"], bins=int(np.clip(group.size // 4, 10, 120)),
            title=f"INT{state['settings']['bits']} {'sym' if state['settings']['sym'] else 'asym'}: the first "
                  f"group's {group.size:,} weights and grid; whole matrix MSE {state['mse']:.3g}, "
                  f"{state['bits_per_weight']:.3f} bits/weight")


@functools.lru_cache(maxsize=64)
def _cached_encode(key: bytes, shape: tuple, bits: int, sym: bool, group_size: int):
    from qtutor import formats

    W = np.frombuffer(key, dtype=np.float32).reshape(shape)
    return formats.get(f"int{bits}").encode(W, group_size=group_size, sym=sym)


def affine_summary(W: np.ndarray, bits: int, sym: bool, group_size: int) -> dict:
    """Error and storage of INT``bits`` on ``W`` at one granularity, and the first group: the weights its scale
    covers (all of them per tensor, row 0 per channel, the first ``group_size`` of row 0 in groups) and its grid."""
    W = np.ascontiguousarray(W, dtype=np.float32)
    q = _cached_encode(W.tobytes(), W.shape, int(bits), bool(sym), int(group_size))
    W_hat = q.dequantize()
    scale = float(np.ravel(q.scales)[0])
    zero = 0.0 if q.zeros is None else float(np.ravel(q.zeros)[0])
    codes = np.arange(-(2 ** (bits - 1) - 1), 2 ** (bits - 1)) if sym else np.arange(0, 2**bits)
    return {
        "mse": float(np.mean((W_hat - W) ** 2)),
        "max_error": float(np.abs(W_hat - W).max()),
        "bits_per_weight": q.bits_per_weight,
        "n_scales": int(np.size(q.scales)),
        "grid_first_group": scale * (codes - zero),
        "first_group": W.ravel() if group_size == 0 else W[0] if group_size == -1 else W[0, :group_size],
        "scale_first_group": scale,
        "zero_first_group": zero,
    }


# --------------------------------------------------------------------------------------------------------------
# Notebook 06: GPTQ, one column at a time
# --------------------------------------------------------------------------------------------------------------
class GPTQStepper:
    """Step / Block / Run / Reset through GPTQ on one layer, for a classroom: at each step the column being
    rounded, its rounding error e = w - q, the row of the Cholesky factor of H^-1 that spreads it, the update it
    pushes onto the columns not yet quantized, and GPTQ's running layer loss against RTN's.

    Controls: bits (INT2..INT8), group size (per channel or a divisor of the slice's columns), act-order, and
    damping in percent of mean(diag H) (``percdamp`` of :mod:`qtutor.methods.gptq`, default 1 %). Changing one
    rebuilds the solver and replays it to the same number of columns; a setting that makes no sense (a group
    size that does not divide the columns, damping <= 0) shows its message and keeps the last good state.

    ``X`` are calibration inputs (tokens x in_features). A toy layer (8 x 16) shows every number;
    :meth:`from_layer` takes a slice (e.g. 32 x 64) of a real model's layer with its real Hessian.
    """

    title = "GPTQ, one column at a time"
    BITS = (2, 8)

    def __init__(self, W: np.ndarray, X: np.ndarray, bits: int = 3, group_size: int = -1, act_order: bool = False,
                 damping: float = 1.0, blocksize: int = 4, annotate: bool | None = None, name: str = "toy layer"):
        from qtutor.methods import gptq

        widgets = _widgets()
        self.W = np.asarray(W, dtype=np.float32)
        if self.W.ndim != 2:
            raise ValueError(f"W must be 2-D (out_features, in_features), got shape {self.W.shape}")
        self.hessian = gptq.Hessian(self.W.shape[1], name=name).add(X)
        self.blocksize, self.name = int(blocksize), name
        self.annotate = annotate
        self.settings: dict = {}
        self.solver = None
        self.history: list[float] = []  # the layer loss after each step
        self.last_step = None
        self.figure = None
        self.state: dict = {}
        self._rebuild({"bits": bits, "group_size": group_size, "act_order": bool(act_order), "damping": damping})

        columns = self.W.shape[1]
        self.group_choices = {"per channel": -1, **{str(g): g for g in self.group_sizes(columns)}}
        self.controls = {
            "bits": widgets.IntSlider(value=bits, min=self.BITS[0], max=self.BITS[1], description="bits",
                                      continuous_update=False, style={"description_width": "initial"}),
            "group_size": widgets.Combobox(
                value=self._group_label(group_size), options=list(self.group_choices), ensure_option=False,
                continuous_update=False, description="group size", placeholder="per channel or a divisor",
                style={"description_width": "initial"}, layout={"width": "230px"}),
            "act_order": widgets.Checkbox(value=bool(act_order), description="act-order", indent=False),
            "damping": widgets.FloatText(value=float(damping), description="damping (% of mean diag H)",
                                         step=0.5, continuous_update=False, style={"description_width": "initial"},
                                         layout={"width": "260px"}),
        }
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.output = widgets.Output()
        self.message = widgets.HTML("")
        self.summary = widgets.Label("")
        self.buttons = {name: widgets.Button(description=name) for name in ("Step", "Block", "Run", "Reset")}
        for name, button in self.buttons.items():
            button.on_click(lambda _button, name=name: self.press(name))
        self.redraw()

    @classmethod
    def from_layer(cls, model: Any, layer_name: str, calib: Any, rows: int = 32, cols: int = 64, row_start: int = 0,
                   col_start: int = 0, **options) -> "GPTQStepper":
        """The stepper on a ``rows x cols`` slice of a real linear layer, with the real Hessian of those inputs.

        ``calib``: calibration token ids (n_samples x seq_len). The layer's inputs are captured the way GPTQ's
        model runner captures them (:func:`qtutor.model.blockwise_inputs`: the forward pass runs up to the
        layer's block and no further). The slice is treated as a layer of its own: its ``cols`` inputs and
        H = 2 X X^T / n restricted to them (the full layer's other columns would absorb errors too)."""
        from qtutor import model as model_tools

        layer = model_tools.find_layer(model, layer_name)
        out_features, in_features = layer.shape
        if not (0 <= row_start and rows >= 1 and row_start + rows <= out_features):
            raise ValueError(f"rows {row_start}..{row_start + rows - 1} do not fit {layer_name}'s {out_features} "
                             f"outputs; use rows + row_start <= {out_features}")
        if not (0 <= col_start and cols >= 2 and col_start + cols <= in_features):
            raise ValueError(f"columns {col_start}..{col_start + cols - 1} do not fit {layer_name}'s {in_features} "
                             f"inputs; use cols + col_start <= {in_features}")
        captured = model_tools.blockwise_inputs(model, calib, [layer])
        try:
            _, inputs = next(captured)
        finally:
            captured.close()
        X = inputs[layer_name][:, col_start:col_start + cols]
        W = model_tools.get_weight(layer)[row_start:row_start + rows, col_start:col_start + cols]
        options.setdefault("blocksize", 16)
        name = f"{layer_name}[{row_start}:{row_start + rows}, {col_start}:{col_start + cols}]"
        return cls(W, X, name=name, **options)

    # ---- settings ------------------------------------------------------------------------------------------
    @staticmethod
    def group_sizes(columns: int) -> list[int]:
        """The group sizes offered for ``columns`` columns: the divisors from 4 up to half of them (smaller
        groups cost more in scales than a lesson needs; the whole row is per channel)."""
        return [g for g in range(4, columns // 2 + 1) if columns % g == 0]

    def _group_label(self, group_size: int) -> str:
        return "per channel" if group_size == -1 else str(group_size)

    def _parse_group_size(self, text: Any) -> int:
        text = str(text).strip().lower()
        if text in ("per channel", "per-channel", "channel", "-1", ""):
            return -1
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"group size {text!r} is not a number: choose per channel or one of "
                             f"{', '.join(map(str, self.group_sizes(self.W.shape[1])))}") from None

    def _solver_for(self, bits: int, group_size: int, act_order: bool, damping: float):
        from qtutor import formats
        from qtutor.methods import gptq

        columns = self.W.shape[1]
        low, high = self.BITS
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not low <= bits <= high:
            raise ValueError(f"bits={bits!r} is out of range: the stepper's grids are INT{low}..INT{high}")
        if not (isinstance(damping, (int, float, np.floating)) and np.isfinite(damping) and damping > 0):
            raise ValueError(f"damping={damping!r} % is not positive: GPTQ adds damping % of mean(diag H) to the "
                             "diagonal so that H can be inverted (1 % is the reference's default)")
        if group_size != -1 and (group_size < 1 or columns % group_size):
            raise ValueError(f"group size {group_size} does not divide the {columns} columns of this slice; use per "
                             f"channel or one of {', '.join(map(str, self.group_sizes(columns)))}")
        return gptq.GPTQ(self.W, self.hessian, formats.get(f"int{bits}"), group_size, blocksize=self.blocksize,
                         percdamp=damping / 100, act_order=act_order, name=self.name)

    def _rebuild(self, settings: dict) -> None:
        """A new solver for ``settings``, replayed to as many columns as the last one had; ValueError if the
        settings make no sense (nothing changes then)."""
        from qtutor.eval.layer_error import running_rtn_loss

        try:
            solver = self._solver_for(settings["bits"], settings["group_size"], bool(settings["act_order"]),
                                      settings["damping"])
        except (TypeError, np.linalg.LinAlgError) as error:
            raise ValueError(str(error)) from error
        replay = self.solver.position if self.solver is not None else 0
        self.solver, self.settings = solver, dict(settings)
        self.rtn_loss = running_rtn_loss(self.W, self.hessian.H, solver.fmt, settings["group_size"],
                                         order=solver.perm)
        self.history, self.last_step = [], None
        for _ in range(replay):
            self._step()

    def configure(self, **changes) -> bool:
        """What the controls do: rebuild with ``changes`` to the settings (bits, group_size, act_order, damping)
        and redraw. A setting that makes no sense shows its message in the widget and keeps the last good
        state; returns whether the settings were taken."""
        try:
            self._rebuild({**self.settings, **changes})
        except ValueError as error:
            self._refuse(error)
            return False
        self.message.value = ""
        self.redraw()
        return True

    def _refuse(self, error: Exception) -> None:
        import html

        self.message.value = f"<span style='color:#d62728'>{html.escape(str(error))}</span>"
        self.state["error"] = str(error)

    def _on_change(self, change) -> None:
        values = {name: control.value for name, control in self.controls.items()}
        try:
            values["group_size"] = self._parse_group_size(values["group_size"])
        except ValueError as error:
            self._refuse(error)
            return
        self.configure(**values)

    # ---- buttons -------------------------------------------------------------------------------------------
    def _step(self):
        from qtutor.eval.layer_error import layer_loss

        self.last_step = self.solver.step()
        self.history.append(layer_loss(self.W, self.solver.current_weights(), self.hessian.H))
        return self.last_step

    def press(self, name: str, times: int = 1) -> None:
        """What a button does, ``times`` times over, then one redraw (callable directly: tests and static
        notebooks use it; ``press("Step", times=20)`` draws once instead of twenty times)."""
        if name not in ("Step", "Block", "Run", "Reset"):
            raise ValueError(f"no button {name!r}: Step, Block, Run or Reset")
        solver = self.solver
        for _ in range(times):
            if name == "Reset":
                solver.reset()
                self.history, self.last_step = [], None
            elif solver.done:
                break
            elif name == "Step":
                self._step()
            elif name == "Block":
                self._step()
                while not solver.done and solver.position % solver.blocksize:
                    self._step()
            else:
                while not solver.done:
                    self._step()
        self.redraw()

    # ---- drawing -------------------------------------------------------------------------------------------
    def figure_data(self) -> dict:
        """The arguments of :func:`qtutor.viz.figures.gptq_step` for the current state."""
        solver, step = self.solver, self.last_step
        current = np.asarray(solver.current_weights())[:, solver.perm]
        update = None
        if step is not None:
            update = np.zeros_like(current)
            update[:, step.position + 1:] = np.asarray(step.update)
        return {"weights": current, "order": np.asarray(solver.perm), "position": solver.position,
                "error": None if step is None else np.asarray(step.error),
                "hinv_row": None if step is None else np.asarray(step.hinv_row),
                "d": None if step is None else step.d, "update": update, "gptq_loss": list(self.history),
                "rtn_loss": self.rtn_loss, "blocksize": solver.blocksize, "annotate": self.annotate}

    def describe(self) -> str:
        state = self.state
        text = (f"{self.name}, INT{self.settings['bits']} {self._group_label(self.settings['group_size'])}"
                f"{', act-order' if self.settings['act_order'] else ''}, damping {self.settings['damping']:g} %: "
                f"step {state['position']}/{self.solver.columns}")
        if state["last_column"] is not None:
            text += f", column {state['last_column']} rounded (d = {state['last_d']:.3g})"
        return text + f"; loss GPTQ {state['gptq_loss']:.3g}, RTN {state['rtn_loss']:.3g}"

    def redraw(self) -> None:
        solver, step = self.solver, self.last_step
        position = solver.position
        self.state = {
            "position": position,
            "settings": dict(self.settings),
            "gptq_loss": self.history[-1] if self.history else 0.0,
            "rtn_loss": float(self.rtn_loss[position - 1]) if position else 0.0,
            "last_column": None if step is None else step.column,
            "last_error": None if step is None else np.asarray(step.error),
            "last_hinv_row": None if step is None else np.asarray(step.hinv_row),
            "last_d": None if step is None else step.d,
            "codes": None if solver.codes is None else np.asarray(solver.codes).copy(),
            "done": solver.done,
        }
        self.summary.value = self.describe()
        figure = figures.gptq_step(**self.figure_data(), title=self.summary.value)
        App._show(self, figure)

    @property
    def widget(self):
        widgets = _widgets()
        return widgets.VBox([widgets.HTML(f"<b>{self.title}</b>"), widgets.HBox(list(self.controls.values())),
                             widgets.HBox(list(self.buttons.values())), self.summary, self.message, self.output])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# --------------------------------------------------------------------------------------------------------------
# Notebook 04: RTN on a real model
# --------------------------------------------------------------------------------------------------------------
class PerplexityTable(App):
    """Slide along pre-measured variants of a model, ordered by bits per weight: perplexity and size at once.

    ``rows`` are ``qtutor.eval.sweep`` points with "format", "group", "ppl", "bits_per_weight"; looking one up
    takes microseconds, so the slider answers instantly; the figure marks the chosen point among all of them."""

    title = "RTN on the tiny model: slide the bit-width"

    def __init__(self, rows: list[dict], reference: float, fmt: str = "int4", group: str = "g128"):
        self.rows, self.reference = sorted(rows, key=lambda r: r["bits_per_weight"]), reference
        labels = {self.label(r): r for r in self.rows}
        self.by_label = labels
        start = next((label for label, r in labels.items() if r["format"] == fmt and r["group"] == group),
                     next(iter(labels)))
        super().__init__({"variant": _widgets().SelectionSlider(
            options=list(labels), value=start, description="bits/weight", continuous_update=False,
            style={"description_width": "initial"}, layout={"width": "560px"})})

    @staticmethod
    def label(row: dict) -> str:
        return f"{row['bits_per_weight']:.2f} {row['format']} {row['group']}"

    def compute(self, variant: str) -> dict:
        if variant not in self.by_label:
            raise ValueError(f"{variant!r} was not measured in this table")
        row = self.by_label[variant]
        return {"row": row, "delta_pct": 100 * (row["ppl"] / self.reference - 1)}

    def describe(self, state: dict) -> str:
        row = state["row"]
        return (f"{row['format']} {row['group']}: perplexity {row['ppl']:.2f} ({state['delta_pct']:+.1f} % vs "
                f"{self.reference:.2f}), {row['bits_per_weight']:.3f} bits/weight")

    def draw(self, state: dict):
        row = state["row"]
        fig = figures.pareto([{**r, "label": f"{r['format']} {r['group']}", "method": r["group"]} for r in self.rows],
                             reference=self.reference, title=self.describe(state))
        fig.axes[0].scatter([row["bits_per_weight"]], [row["ppl"]], s=180, facecolors="none",
                            edgecolors=figures.ERROR, linewidths=2, zorder=4)
        return fig


# --------------------------------------------------------------------------------------------------------------
# Notebook 15: choosing a method
# --------------------------------------------------------------------------------------------------------------
class MethodAdvisor(App):
    """Hardware, model size, memory, tolerance, calibration data -> the advice of ``qtutor.eval.advisor``, with a
    real measurement of the same method and format beside it (``rows``: ``qtutor.eval.sweep`` points measured on
    the model named by ``measured_on``)."""

    title = "Which method and format? (the decision rule of qtutor.eval.advisor)"
    SIZES = {"1B": 1e9, "3B": 3e9, "8B": 8e9, "14B": 14e9, "32B": 32e9, "70B": 70e9}

    CONTEXTS = (0, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

    def __init__(self, rows: list[dict] = (), hardware: str = "cpu", size: str = "8B", memory_gb: int = 8,
                 tolerance_pct: float = 3.0, measured_on: str = "the tiny model", context: int = 4096,
                 headroom_gb: float = 2.0):
        from qtutor.eval import advisor

        widgets = _widgets()
        self.rows, self.measured_on = list(rows), measured_on
        super().__init__({
            "hardware": dropdown("hardware", [(label, key) for key, label in advisor.HARDWARE.items()], hardware),
            "size": dropdown("model", list(self.SIZES), size),
            "memory_gb": slider("memory (GB)", memory_gb, 2, 192),
            "context": dropdown("context (tokens)", [(f"{c:,}", c) for c in self.CONTEXTS], context),
            "headroom_gb": widgets.FloatSlider(value=headroom_gb, min=0.0, max=8.0, step=0.5,
                                               description="kept for the system (GB)", continuous_update=False,
                                               style={"description_width": "initial"}),
            "tolerance_pct": widgets.FloatSlider(value=tolerance_pct, min=0.0, max=20.0, step=0.5,
                                                 description="loss tolerance (%)", continuous_update=False,
                                                 style={"description_width": "initial"}),
            "calibration": checkbox("calibration data", True),
            "finetune": checkbox("fine-tune (QLoRA)", False)})

    @property
    def widget(self):
        widgets = _widgets()
        controls = list(self.controls.values())
        return widgets.VBox([widgets.HTML(f"<b>{self.title}</b>"), widgets.HBox(controls[:3]),
                             widgets.HBox(controls[3:5]), widgets.HBox(controls[5:]), self.summary, self.message,
                             self.output])

    def compute(self, hardware: str, size: str, memory_gb: int, context: int, headroom_gb: float,
                tolerance_pct: float, calibration: bool, finetune: bool) -> dict:
        from qtutor.eval import advisor

        advice = advisor.recommend(self.SIZES[size], memory_gb, hardware, tolerance_pct, calibration, finetune,
                                   context=context, headroom_gb=headroom_gb)
        measured = advisor.evidence(self.rows, advice.choice) if advice.choice else None
        return {"advice": advice, "evidence": measured}

    def describe(self, state: dict) -> str:
        advice, measured = state["advice"], state["evidence"]
        if advice.choice is None:
            return advice.reasons[0]
        low, high = advice.expected_loss_pct
        text = (f"{advice.choice.label}: {advice.gb:.1f} of {advice.memory_gb:g} GB, expected +{low:g} to "
                f"+{high:g} % perplexity")
        if measured is not None and "delta_pct" in measured:
            how = " (rounding, as a proxy)" if measured.get("proxy") else ""
            text += f"; {self.measured_on} measured {measured['delta_pct']:+.1f} %{how}"
        return text + ("" if advice.within_tolerance else " (beyond your tolerance)")

    def draw(self, state: dict):
        advice = state["advice"]
        rows = advice.considered
        chosen = [advice.choice.label] if advice.choice else []
        fig = figures.bar_chart([r["label"] for r in rows], [r["gb"] for r in rows], ylabel="GB needed",
                                title=" ".join(advice.reasons[1:2]) or advice.reasons[0], highlight=chosen)
        ax = fig.axes[0]
        ax.axhline(advice.memory_gb, color="black", linestyle=":", linewidth=1)
        ax.text(len(rows) - 0.5, advice.memory_gb, f"memory {advice.memory_gb:g} GB", va="bottom", ha="right",
                fontsize=10)
        if advice.headroom_gb:
            ax.axhline(advice.usable_gb, color="black", linestyle="--", linewidth=1)
            ax.text(-0.5, advice.usable_gb, f"free after the system: {advice.usable_gb:g} GB", va="bottom",
                    ha="left", fontsize=10)
        if advice.kv_cache_gb:
            ax.bar(range(len(rows)), [advice.kv_cache_gb] * len(rows), color="0.75", label="KV cache")
            ax.legend(loc="upper right", fontsize=10)
        ax.title.set_fontsize(10)
        return fig


# --------------------------------------------------------------------------------------------------------------
# Notebook 10: GGUF block anatomy
# --------------------------------------------------------------------------------------------------------------
def block_summary(W_row: np.ndarray, type_name: str, index: int) -> dict:
    """One block of ``W_row`` in ``type_name``: its bytes, their roles, and how weight ``index`` is rebuilt."""
    from qtutor.methods import gguf
    from qtutor.methods.gguf import anatomy

    block, size, bpw = gguf.block_info(type_name)
    row = np.asarray(W_row, dtype=np.float32).reshape(1, -1)[:, :block]
    data = gguf.quantize(row, type_name)[0, :size]
    index = min(int(index), block - 1)
    return {"bytes": data, "roles": anatomy.byte_roles(type_name), "bits_per_weight": bpw,
            "original": float(row[0, index]), **anatomy.explain(data, type_name, index)}


class BlockAnatomy(App):
    """Pick a ggml type and a weight: the block's bytes by role, and the formula that rebuilds the weight."""

    title = "Inside a GGUF block: pick a type and a weight"

    def __init__(self, W_row: np.ndarray, type_name: str = "Q4_K", index: int = 0):
        from qtutor.methods import gguf

        self.W_row = np.asarray(W_row, dtype=np.float32).ravel()
        super().__init__({"type_name": dropdown("type", gguf.type_names(), type_name),
                          "index": slider("weight", index, 0, 255)})

    def compute(self, type_name: str, index: int) -> dict:
        return block_summary(self.W_row, type_name, index)

    def draw(self, state: dict):
        return figures.block_bytes(state["roles"], state["bytes"],
                                   title=f"{state['type']} ({state['bits_per_weight']:g} bits/weight): weight "
                                         f"{state['weight']} = {state['formula']} = {state['value']:.4g} "
                                         f"(was {state['original']:.4g})")


# --------------------------------------------------------------------------------------------------------------
# Notebook 07: AWQ's search for the scaling exponent
# --------------------------------------------------------------------------------------------------------------
class AWQAlphaSearch(App):
    """AWQ's grid search on one layer (W, X): the output error for every alpha, the alpha it keeps, and RTN's
    error (alpha = 0 gives s = 1, so the curve starts exactly at RTN). Bits and group size are controls."""

    title = "AWQ: the output error as the salient channels are scaled up (s = mean|x|^alpha)"

    def __init__(self, W: np.ndarray, X: np.ndarray, bits: int = 4, group_size: int = 128):
        self.W = np.asarray(W, dtype=np.float32)
        self.X = np.asarray(X, dtype=np.float32).reshape(-1, self.W.shape[1])
        columns = self.W.shape[1]
        sizes = [("per channel", -1)] + [(f"groups of {g}", g) for g in (256, 128, 64, 32)
                                         if columns % g == 0 and g < columns]
        super().__init__({"bits": slider("bits", bits, 2, 8), "group_size": dropdown("scale per", sizes, group_size)})

    def compute(self, bits: int, group_size: int) -> dict:
        from qtutor import formats
        from qtutor.methods import awq

        fmt = formats.get(f"int{bits}")
        found = awq.search_scale(self.X, [self.W], awq.linear_block, fmt, group_size)
        rtn = awq.fake_quantize(self.W, fmt, group_size, None)  # the search's rounding: alpha = 0 is exactly RTN
        rtn_loss = layer_output_error(self.X, self.W, rtn)
        best = float(min(found["losses"]))
        return {"alphas": found["alphas"], "losses": found["losses"], "alpha": found["alpha"], "s": found["s"],
                "best_loss": best, "rtn_loss": rtn_loss, "gain": rtn_loss / best if best > 0 else float("inf")}

    def describe(self, state: dict) -> str:
        return (f"searched alpha = {state['alpha']:g}: output error {state['best_loss']:.3g} against RTN's "
                f"{state['rtn_loss']:.3g} ({state['gain']:.2f}x smaller)")

    def draw(self, state: dict):
        settings = state["settings"]
        group = "per channel" if settings["group_size"] == -1 else f"g{settings['group_size']}"
        return figures.alpha_curve(state["alphas"], state["losses"], state["alpha"], state["rtn_loss"],
                                   title=f"INT{settings['bits']} {group}: {self.describe(state)}",
                                   ylabel="output error  mean (XŴᵀ − XWᵀ)²")


# --------------------------------------------------------------------------------------------------------------
# Notebook 08: SmoothQuant's migration strength
# --------------------------------------------------------------------------------------------------------------
def smoothing_summary(X: np.ndarray, W: np.ndarray, alpha: float) -> dict:
    """SmoothQuant at one alpha on one layer: the per-channel peaks of X/s and W*s, their max/median ratios, and
    the relative output error of W8A8 and W4A4 (weights per output channel, activations per token)."""
    from qtutor.methods import smoothquant

    s = smoothquant.smoothing_scales(smoothquant.activation_scales(X), [W], alpha)
    X_smooth, (W_smooth,) = smoothquant.smooth(X, [W], s)
    Y = X @ W.T
    ratio = smoothquant.difficulty(X_smooth, W_smooth)
    return {"s": s, "activation_peaks": smoothquant.activation_scales(X_smooth),
            "weight_peaks": np.abs(W_smooth).max(axis=0), "activation_ratio": ratio["activation"],
            "weight_ratio": ratio["weight"],
            "w8a8_error": relative_error(smoothquant.w8a8_matmul(X_smooth, W_smooth, 8, 8), Y),
            "w4a4_error": relative_error(smoothquant.w8a8_matmul(X_smooth, W_smooth, 4, 4), Y)}


class SmoothingSlider(App):
    """Slide SmoothQuant's alpha on one layer (X: tokens x channels, W: out x channels): per-channel peaks of the
    activations X/s and of the weights W*s side by side, and the W8A8 and W4A4 output errors at that alpha
    against those without smoothing (s = 1, which no alpha gives exactly: alpha = 0 still divides by max|W_j|)."""

    title = "SmoothQuant: move the difficulty from the activations to the weights"

    def __init__(self, X: np.ndarray, W: np.ndarray, alpha: float = 0.5, highlight=()):
        from qtutor.methods import smoothquant

        self.X, self.W = np.asarray(X, dtype=np.float32), np.asarray(W, dtype=np.float32)
        self.highlight = tuple(int(j) for j in highlight)
        Y = self.X @ self.W.T
        self.unsmoothed = {"w8a8_error": relative_error(smoothquant.w8a8_matmul(self.X, self.W, 8, 8), Y),
                           "w4a4_error": relative_error(smoothquant.w8a8_matmul(self.X, self.W, 4, 4), Y)}
        super().__init__({"alpha": _widgets().FloatSlider(
            value=alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False,
            readout_format=".2f", style={"description_width": "initial"})})

    def compute(self, alpha: float) -> dict:
        return smoothing_summary(self.X, self.W, round(float(alpha), 4))

    def describe(self, state: dict) -> str:
        return (f"alpha {state['settings']['alpha']:.2f}: W8A8 error {state['w8a8_error']:.4f} "
                f"(unsmoothed {self.unsmoothed['w8a8_error']:.4f}), W4A4 error {state['w4a4_error']:.4f} "
                f"(unsmoothed {self.unsmoothed['w4a4_error']:.4f})")

    def draw(self, state: dict):
        return figures.channel_peaks_pair(state["activation_peaks"], state["weight_peaks"], self.highlight,
                                          title=self.describe(state))


# --------------------------------------------------------------------------------------------------------------
# Watch it break: greedy generation at float and quantized, side by side
# --------------------------------------------------------------------------------------------------------------
# group size 64 divides the rows of the tiny model (256, 768) and of SmolLM2 (576, 1536)
GENERATION_VARIANTS = [
    {"label": "FP32", "method": None},
    {"label": "INT8 per channel", "method": "rtn", "fmt": "int8", "group_size": -1},
    {"label": "INT4 g64", "method": "rtn", "fmt": "int4", "group_size": 64},
    {"label": "INT3 g64", "method": "rtn", "fmt": "int3", "group_size": 64},
    {"label": "INT2 g64", "method": "rtn", "fmt": "int2", "group_size": 64},
]


def split_at_divergence(tokenizer: Any, row: dict) -> tuple[str, str]:
    """A row's text cut where it leaves the float model's: (the shared part, the rest).

    The cut is after the ``same_tokens_as_float`` shared tokens; if that prefix decodes to something that is not
    a prefix of the text (a multi-byte character cut in two), the cut moves back to where they still agree."""
    import os

    text = row["text"]
    shared = tokenizer.decode(row["tokens"][: row["same_tokens_as_float"]], skip_special_tokens=True)
    cut = len(os.path.commonprefix([shared, text]))
    return text[:cut], text[cut:]


def generation_html(prompt: str, rows: list[dict], tokenizer: Any) -> str:
    """The rows of ``qtutor.eval.generation.side_by_side`` as an HTML table: label, bits/weight, shared tokens,
    and the text, its part after the first divergence from float in red."""
    import html

    cells = []
    for row in rows:
        same, rest = split_at_divergence(tokenizer, row)
        diverged = (f"<span style='color:{figures.ERROR};background:#fde0dd'>{html.escape(rest)}</span>"
                    if rest else "")
        cells.append(f"<tr><td style='white-space:nowrap'><b>{html.escape(row['label'])}</b></td>"
                     f"<td>{row['bits_per_weight']:.2f}</td><td>{row['same_tokens_as_float']}</td>"
                     f"<td style='white-space:pre-wrap;text-align:left'>{html.escape(same)}{diverged}</td></tr>")
    return (f"<div style='font-family:monospace'><p><b>prompt:</b> {html.escape(prompt)}</p>"
            "<table><tr><th>variant</th><th>bits/weight</th><th>same tokens</th><th style='text-align:left'>"
            "continuation (red: after the first token that differs from float)</th></tr>"
            f"{''.join(cells)}</table></div>")


class GenerationComparison:
    """One prompt, greedy decoding, the float model and quantized variants side by side: watch it break.

    Type a prompt, pick variants (``qtutor.eval.generation.side_by_side`` dicts; ``calib`` for GPTQ / AWQ) and
    the number of new tokens, press Generate. Generating takes seconds, so nothing runs until the button is
    pressed (or ``generate()`` called); each (prompt, variant, max_new_tokens) is generated once and cached.
    """

    title = "Watch it break: the same prompt, greedy, at float and quantized"

    def __init__(self, model: Any, tokenizer: Any, prompt: str = "The capital of France is",
                 variants: list[dict] | None = None, calib: Any = None, max_new_tokens: int = 30):
        from qtutor.eval.generation import variant_label

        widgets = _widgets()
        self.model, self.tokenizer, self.calib = model, tokenizer, calib
        variants = list(GENERATION_VARIANTS if variants is None else variants)
        self.variants = {variant_label(variant): variant for variant in variants}
        if len(self.variants) != len(variants):
            raise ValueError(f"two variants share a label: {[variant_label(v) for v in variants]}; give each a "
                             f"distinct 'label'")
        labels = list(self.variants)
        self.controls = {
            "prompt": widgets.Textarea(value=prompt, description="prompt", continuous_update=False,
                                       style={"description_width": "initial"}, layout={"width": "560px"}),
            "variants": widgets.SelectMultiple(options=labels, value=tuple(labels), description="variants",
                                               rows=min(len(labels), 8), style={"description_width": "initial"}),
            "max_new_tokens": slider("new tokens", max_new_tokens, 1, 100),
        }
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.button.on_click(lambda _button: self.generate())
        self.output = widgets.HTML("")
        self.message = widgets.HTML("")
        self.summary = widgets.Label("")
        self.state: dict = {}
        self._cache: dict = {}  # (prompt, label, max_new_tokens) -> row

    def settings(self) -> dict:
        return {"prompt": self.controls["prompt"].value, "variants": tuple(self.controls["variants"].value),
                "max_new_tokens": int(self.controls["max_new_tokens"].value)}

    def compute(self, prompt: str, variants: tuple, max_new_tokens: int) -> list[dict]:
        """The rows of ``side_by_side`` for the variants labelled ``variants``, generating only those not cached."""
        from qtutor.eval import generation

        if not variants:
            raise ValueError("no variant selected: pick at least one")
        missing = [self.variants[label] for label in variants if (prompt, label, max_new_tokens) not in self._cache]
        if missing:
            for row in generation.side_by_side(self.model, self.tokenizer, prompt, missing, max_new_tokens,
                                               progress=False, calib=self.calib):
                self._cache[(prompt, row["label"], max_new_tokens)] = row
        return [self._cache[(prompt, label, max_new_tokens)] for label in variants]

    def describe(self, rows: list[dict]) -> str:
        return "same tokens as float: " + ", ".join(f"{row['label']} {row['same_tokens_as_float']}" for row in rows)

    def generate(self) -> None:
        """What the Generate button does: compute for the current settings and show the table (or why not)."""
        settings = self.settings()
        try:
            rows = self.compute(**settings)
        except (ValueError, TypeError) as error:  # a prompt too long, none selected: say why, keep the last table
            self.state = {"error": str(error), "settings": settings}
            self.message.value = f"<span style='color:{figures.ERROR}'>{error}</span>"
            return
        self.state = {"rows": rows, "settings": settings}
        self.message.value = ""
        self.summary.value = self.describe(rows)
        self.output.value = generation_html(settings["prompt"], rows, self.tokenizer)

    @property
    def widget(self):
        widgets = _widgets()
        return widgets.VBox([widgets.HTML(f"<b>{self.title}</b>"), self.controls["prompt"],
                             widgets.HBox([self.controls["variants"], self.controls["max_new_tokens"], self.button]),
                             self.summary, self.message, self.output])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# --------------------------------------------------------------------------------------------------------------
# Notebook 04: a new point on demand, on the real model
# --------------------------------------------------------------------------------------------------------------
EXPLORER_METHODS = {"RTN": "rtn", "GPTQ": "gptq", "AWQ": "awq"}
EXPLORER_GROUPS = {"per channel": -1, "64": 64, "32": 32}


def explorer_key(point: dict) -> tuple[str, int, int]:
    """(method, bits, group size) of an integer-format point of ``qtutor.eval.sweep.evaluate``."""
    fmt = str(point["format"])
    if not fmt.startswith("int"):
        raise ValueError(f"the explorer shows integer formats (int2..int8), not {fmt}")
    return str(point["method"]), int(fmt[3:]), int(point["group_size"])


class QuantizationExplorer:
    """Method (RTN / GPTQ / AWQ) x bits (2-8) x group (per channel, 64, 32) on a real model.

    Points already measured (``rows``: ``qtutor.eval.sweep.evaluate`` points, the notebook's table) answer at
    once. A setting not measured yet says so and what it costs; **Compute** quantizes the model, scores the
    evaluation slice (the same tokens as ``baseline``, a :class:`~qtutor.eval.perplexity.Score` of the float
    model), puts the weights back and caches the point, with a progress bar in the widget while it works.
    Every point is shown with its standard error and its change against float, token by token."""

    title = "Method × bits × group: the table answers at once, Compute measures a new point"
    SECONDS = {"rtn": "a few seconds", "gptq": "about 2 minutes", "awq": "a few minutes"}

    def __init__(self, model: Any, tokenizer: Any, baseline: Any, rows: list[dict] = (), calib: Any = None, *,
                 max_tokens: int | None = None, ctx: int | None = None, stride: int | None = None,
                 method: str = "RTN", bits: int = 4, group: str = "64"):
        widgets = _widgets()
        self.model, self.tokenizer, self.baseline, self.calib = model, tokenizer, baseline, calib
        # the slice of the baseline: every new point is scored on exactly its tokens
        self.window = dict(split=baseline.split or "test", ctx=ctx or baseline.ctx, stride=stride or baseline.stride,
                           max_tokens=max_tokens or baseline.n_tokens + 1)
        self.points: dict[tuple, dict] = {}
        for row in rows:
            self.points[explorer_key(row)] = row
        self.controls = {
            "method": dropdown("method", list(EXPLORER_METHODS), method),
            "bits": slider("bits", bits, 2, 8),
            "group": dropdown("group", list(EXPLORER_GROUPS), group),
        }
        self.button = widgets.Button(description="Compute", button_style="primary")
        self.button.on_click(lambda _button: self.compute_point())
        self.output, self.progress = widgets.Output(), widgets.Output()
        self.message, self.summary = widgets.HTML(""), widgets.Label("")
        self.state: dict = {}
        self.figure = None
        for control in self.controls.values():
            control.observe(lambda _change: self.refresh(), names="value")
        self.refresh()

    def settings(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def key(self, method: str, bits: int, group: str) -> tuple[str, int, int]:
        return EXPLORER_METHODS[method], int(bits), EXPLORER_GROUPS[group]

    def measure(self, method: str, bits: int, group: str) -> dict:
        """The point for these settings: quantize, score the slice, restore (``evaluate``)."""
        from qtutor.eval.sweep import evaluate
        from qtutor.methods import declaration

        name, bits, group_size = self.key(method, bits, group)
        if declaration(name).calibration and self.calib is None:
            raise ValueError(f"{method} needs calibration data: give the explorer calib=qt.data.calibration(...)")
        return evaluate(self.model, self.tokenizer, name, f"int{bits}", group_size, **self.window,
                        calib=self.calib, baseline=self.baseline, progress=True)

    def compute_point(self) -> None:
        """What the Compute button does: measure the current setting if it is new (progress shown), then show it."""
        settings = self.settings()
        key = self.key(**settings)
        if key not in self.points:
            self.button.disabled = True
            self.message.value = f"computing {settings['method']} INT{settings['bits']} {settings['group']} ..."
            try:
                with self.progress:
                    self.progress.clear_output()
                    self.points[key] = self.measure(**settings)
                    self.progress.clear_output()
            except (ValueError, TypeError) as error:
                self.state = {"error": str(error), "settings": settings}
                self.message.value = f"<span style='color:{figures.ERROR}'>{error}</span>"
                return
            finally:
                self.button.disabled = False
        self.refresh()

    def refresh(self) -> None:
        settings = self.settings()
        key = self.key(**settings)
        point = self.points.get(key)
        self.state = {"settings": settings, "point": point, "measured": len(self.points)}
        if point is None:
            self.summary.value = ""
            self.message.value = (f"{settings['method']} INT{settings['bits']} {settings['group']} is not measured "
                                  f"yet: press Compute ({self.SECONDS[key[0]]} on a laptop CPU)")
        else:
            self.message.value = ""
            self.summary.value = self.describe(point)
        self._show(figures.perplexity_points(list(self.points.values()), self.baseline.ppl,
                                             self.baseline.ppl_stderr, chosen=point,
                                             title=self.describe(point) if point else ""))

    def describe(self, point: dict) -> str:
        change = f"{point['delta_pct']:+.1f} % ± {point['delta_pct_stderr']:.1f}"
        noise = "" if point.get("significant", True) else ", inside the noise"
        return (f"{point['method'].upper()} {point['format'].upper()} "
                f"{'per channel' if point['group_size'] == -1 else 'g' + str(point['group_size'])}: "
                f"perplexity {point['ppl']:.2f} ± {point['ppl_stderr']:.2f} ({change} vs float{noise}), "
                f"{point['bits_per_weight']:.3f} bits/weight")

    _show = App._show  # the figure into the Output, the previous one closed

    @property
    def widget(self):
        widgets = _widgets()
        return widgets.VBox([widgets.HTML(f"<b>{self.title}</b>"),
                             widgets.HBox([*self.controls.values(), self.button]), self.summary, self.message,
                             self.progress, self.output])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# --------------------------------------------------------------------------------------------------------------
# Notebook 15: error per layer, method against method
# --------------------------------------------------------------------------------------------------------------
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def layer_error_grid(errors: dict[str, float], projections: Sequence[str] = PROJECTIONS) -> np.ndarray:
    """``{"model.layers.B.mlp.down_proj": e, ...}`` -> blocks x projections (NaN where a layer is missing)."""
    import re

    blocks = 1 + max(int(re.search(r"layers\.(\d+)\.", name).group(1)) for name in errors)
    grid = np.full((blocks, len(projections)), np.nan)
    for name, value in errors.items():
        block = int(re.search(r"layers\.(\d+)\.", name).group(1))
        grid[block, projections.index(name.rsplit(".", 1)[-1])] = value
    return grid


def layer_error_summary(data: dict, setting: str, method: str, view: str, worst: int = 5) -> dict:
    """One view of ``qt.zoo.layer_errors``: the grid of a method's errors (or their ratio to RTN's on the same
    layers), and its ``worst`` layers by error, named."""
    if setting not in data["errors"] or method not in data["errors"][setting]:
        raise ValueError(f"no stored errors for {method} at {setting}; stored: {', '.join(data['settings'])} x "
                         f"{', '.join(data['methods'])}")
    errors = data["errors"][setting][method]
    grid = layer_error_grid(errors)
    shown = grid / layer_error_grid(data["errors"][setting]["RTN"]) if view == "ratio" else grid
    order = sorted(errors, key=lambda name: -errors[name])[:worst]
    cells = [(int(name.split(".")[2]), PROJECTIONS.index(name.rsplit(".", 1)[-1])) for name in order]
    short = [name.replace("model.layers.", "").replace("self_attn.", "").replace("mlp.", "") for name in order]
    helped = None
    if method != "RTN":
        rtn = data["errors"][setting]["RTN"]
        helped = float(np.mean([errors[name] < rtn[name] for name in errors]))
    return {"grid": shown, "worst": list(zip(short, (errors[name] for name in order))), "cells": cells,
            "helped": helped, "total": float(sum(errors.values()))}


class LayerErrorMap(App):
    """Blocks x projections of a real model: each layer's output error under RTN, GPTQ or AWQ at a chosen
    format, or the method's error divided by RTN's on the same layer; the worst layers outlined and named."""

    title = "Error per layer: which layers suffer, and where each method helps"

    def __init__(self, data: dict, setting: str | None = None, method: str = "RTN", view: str = "error"):
        self.data = data
        super().__init__({
            "setting": dropdown("format", data["settings"], setting or data["settings"][0]),
            "method": dropdown("method", data["methods"], method),
            "view": dropdown("show", [("output error", "error"), ("error / RTN's", "ratio")], view),
        })

    def compute(self, setting: str, method: str, view: str) -> dict:
        return layer_error_summary(self.data, setting, method, view)

    def describe(self, state: dict) -> str:
        worst = ", ".join(f"{name} {value:.3g}" for name, value in state["worst"][:3])
        text = f"largest errors: {worst}"
        if state["helped"] is not None:
            text += f"; lower than RTN's on {state['helped']:.0%} of the layers"
        return text

    def draw(self, state: dict):
        settings = state["settings"]
        ratio = settings["view"] == "ratio"
        return figures.layer_map(
            state["grid"], [f"block {b}" for b in range(state["grid"].shape[0])], [p[:-5] for p in PROJECTIONS],
            ratio=ratio, marked=[] if ratio else state["cells"],
            colorbar_label=f"{settings['method']} error / RTN error" if ratio else "relative output error",
            title=f"{settings['method']} {settings['setting']}: "
                  + ("error divided by RTN's (blue: better)" if ratio else "output error per layer (worst outlined)"))


# --------------------------------------------------------------------------------------------------------------
# Notebooks 09 and 17: a training run replayed from its saved checkpoints (nothing trains on a slider)
# --------------------------------------------------------------------------------------------------------------
def replay_summary(run: dict, index: int) -> dict:
    """Checkpoint ``index`` of a stored run: its step, perplexity ± standard error and change from float, the mean
    training loss of the steps before it, and the share of the layer's weights within 1/8 of a step from a grid
    point (how far QAT has pulled them onto the grid)."""
    checkpoints = run["checkpoints"]
    if not 0 <= index < len(checkpoints):
        raise ValueError(f"checkpoint {index}: this run has checkpoints 0 ... {len(checkpoints) - 1}")
    point = checkpoints[index]
    losses = run["losses"][max(0, point["step"] - 10): point["step"]]
    summary = {"step": point["step"], "ppl": point["ppl"], "ppl_stderr": point["ppl_stderr"],
               "delta_pct": point["delta_pct"], "delta_pct_stderr": point["delta_pct_stderr"],
               "recent_loss": float(np.mean(losses)) if losses else None}
    if "codes" in point:
        edges = np.asarray(run["histogram_bins"], dtype=float)
        centres = (edges[:-1] + edges[1:]) / 2
        near = np.abs(centres - np.round(centres)) < 1 / 8
        counts = np.asarray(point["codes"], dtype=float)
        summary["near_grid"] = float(counts[near].sum() / counts.sum())
    return summary


class TrainingReplay(App):
    """Replay stored training runs: pick a run, slide through its checkpoints; the loss, the perplexity against
    the baselines and one layer's weights in units of their step redraw (from stored data, instantly)."""

    title = "A training run, replayed from its checkpoints"

    def __init__(self, runs: dict[str, dict], baselines: dict[str, dict] | None = None, run: str | None = None,
                 checkpoint: int = 0):
        if not runs:
            raise ValueError("no runs to replay: give {label: run} with losses and checkpoints")
        self.runs, self.baselines = runs, baselines or {}
        longest = max(len(r["checkpoints"]) for r in runs.values())
        super().__init__({"run": dropdown("run", list(runs), run or next(iter(runs))),
                          "checkpoint": slider("checkpoint", checkpoint, 0, longest - 1)})

    def compute(self, run: str, checkpoint: int) -> dict:
        stored = self.runs[run]
        index = min(checkpoint, len(stored["checkpoints"]) - 1)
        return {"index": index, **replay_summary(stored, index)}

    def describe(self, state: dict) -> str:
        text = (f"step {state['step']}: perplexity {state['ppl']:.1f} ± {state['ppl_stderr']:.1f} "
                f"({state['delta_pct']:+.1f} % ± {state['delta_pct_stderr']:.1f} from float)")
        if state.get("near_grid") is not None:
            text += f"; {state['near_grid']:.0%} of the layer's weights within 1/8 step of a grid point"
        return text

    def draw(self, state: dict):
        name = state["settings"]["run"]
        stored = self.runs[name]
        return figures.training_replay(stored["losses"], stored["checkpoints"], state["index"],
                                       stored.get("histogram_bins", ()), self.baselines.get(name), title=name)
