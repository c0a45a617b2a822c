"""Quantization methods, one file each: how to choose the codes once the format is fixed.

Each method file ends with its declaration, ``METHOD = Method(...)``: what the method needs (calibration text,
its layers' inputs, captured block by block or at once) and what it does (a per-tensor weight quantizer
``quantize(W, fmt, group_size, sym, calib=None, **options) -> QuantizedTensor``, a model transform before the
weights are rounded, a run-time hook, a whole-model replacement). ``qt.quantize_model``,
``qtutor.eval.sweep.evaluate`` and the ``qtutor`` command read the declarations and run the phases they name
(the model-level ones are in :mod:`qtutor.model.phases`), so nothing outside a method's file knows it by name.
A new method is one new file and one line in ``METHODS``.

``rtn`` rounds every weight to its nearest grid point; calibrated methods (``gptq``, ``awq``, ...) use
activations ``calib`` (tokens x in_features) to choose codes that keep the layer's *output* close.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from qtutor.tensor import QuantizedTensor

# the registry: every method, in the order the CLI lists them (each name is a module of this package)
METHODS = ("rtn", "gptq", "awq", "llm_int8", "rotation", "smoothquant", "gguf", "hqq", "quip_sharp", "aqlm",
           "vptq", "any4", "affinequant", "mr_gptq")

DEFAULT_FORMAT = "int4"  # the weights' format when none is asked and the method does not define its own


@dataclass(frozen=True)
class Method:
    """What a method needs and does, declared once at the end of its own file (``METHOD = Method(...)``).

    The model-level phases are named by a key of the tables in :mod:`qtutor.model.phases`, where they are
    implemented: a method (arrays in, arrays out) never imports the model layer.
    """

    name: str
    # its per-tensor weight quantizer, quantize(W, fmt, group_size, sym, calib, name=, role=, **options) ->
    # QuantizedTensor; the model layer passes each layer's name and role (qtutor.model.role_of: "q", "down", ...)
    quantize: Callable[..., QuantizedTensor] | None = None
    # its quantizer takes the weights where the model keeps them: CuPy arrays when the model is on a CUDA device
    # (and CuPy is installed), so the formats' and its own kernels run there; otherwise it gets host NumPy copies
    device_arrays: bool = False
    # or, for a method without one of its own, the method whose quantizer rounds its weights (SmoothQuant: "rtn")
    weights: str | None = None
    # needs calibration token ids (calib=qt.data.calibration(...)); refused without them
    calibration: bool = False
    # its quantizer reads each layer's own inputs, captured from the calibration text
    layer_inputs: bool = False
    # those inputs are captured block by block, each block's after the blocks before it are quantized (GPTQ)
    sequential: bool = False
    # the format and granularity the method defines, e.g. {"fmt": "int8", "group_size": -1, "sym": True};
    # asking for another is an error (see resolve)
    fixed: dict = field(default_factory=dict)
    # the only formats the method takes, its default first (the codebook methods: QuIP#'s "e8p", AQLM's tables);
    # empty: every element format. A codebook format (qtutor.formats.codebook_formats) needs a method listing it
    formats: tuple[str, ...] = ()
    # before the weights are rounded: a change to the model that leaves what it computes as it was
    # (phases.TRANSFORMS: AWQ's searched and folded scales, SmoothQuant's smoothing)
    transform: str | None = None
    # while the model runs: every linear computes the method's own product (phases.HOOKS: LLM.int8())
    hook: str | None = None
    # how run-time activation quantization rounds each linear's input (phases.ACTIVATIONS: "plain", "rotated")
    activations: str = "plain"
    # the activations' format when none is asked: a format name, "weights" for the weights' own, None: none
    act_format: str | None = None
    # instead of per-tensor quantization, every weight replaced at once (phases.REPLACEMENTS: a GGUF mix)
    replace: str | None = None
    # the run options of evaluate() and the CLI that the method reads (they go to its phases and into the point)
    options: tuple[str, ...] = ()
    # how ``fmt`` is checked when it names something else than a number format (GGUF: a llama.cpp mix)
    check_fmt: Callable[[str], str] | None = None

    def resolve(self, fmt: Any = "default", group_size: Any = "default", sym: bool | None = None) -> tuple:
        """(fmt, group_size, sym) with the method's own values where it defines them.

        ``fmt="default"`` (or None) is the method's format, else int4; ``group_size="default"`` and ``sym=None``
        are left for the format to choose, unless the method fixes them. Asking for another value than a fixed
        one is an error, not a silent substitution."""
        asked = {"fmt": fmt, "group_size": group_size, "sym": sym}
        unset = {"fmt": ("default", None), "group_size": ("default",), "sym": (None,)}
        for key, value in self.fixed.items():
            wanted = asked[key]
            if any(wanted is u or wanted == u for u in unset[key]):
                continue
            same = _format_name(wanted) == value if key == "fmt" else wanted == value
            if not same:
                defined = ", ".join(f"{k}={v!r}" for k, v in self.fixed.items())
                raise ValueError(f"{self.name} quantizes its weights with {defined} by definition; {key}={wanted!r} "
                                 f"asks for another. Leave {key} out (or give {value!r}); for other formats choose a "
                                 f"method that takes one: {', '.join(_free_format_methods())}")
        resolved = {**asked, **self.fixed}
        if resolved["fmt"] in ("default", None):
            resolved["fmt"] = self.formats[0] if self.formats else DEFAULT_FORMAT
        self._check_listed(resolved["fmt"])
        return resolved["fmt"], resolved["group_size"], resolved["sym"]

    def _check_listed(self, fmt: Any) -> None:
        from qtutor import formats

        if self.check_fmt is not None:  # a method whose fmt names something else (a GGUF mix) checks its own
            return
        name = _format_name(fmt)
        if self.formats and name not in self.formats:
            raise ValueError(f"{self.name} takes the formats {', '.join(self.formats)}, not {name!r}")
        if not self.formats and name in formats.codebook_formats():
            takers = [m for m in METHODS if name in declaration(m).formats]
            raise ValueError(f"{name} is a codebook format (vectors of weights, not numbers on a grid); "
                             f"{self.name} rounds numbers: use {' or '.join(takers) or 'a codebook method'}")

    def check_format(self, fmt: Any = "default") -> str:
        """The canonical name of the format (or mix) ``fmt`` asks for; a ValueError that says why if it is refused."""
        fmt = self.resolve(fmt)[0]
        return self.check_fmt(fmt) if self.check_fmt is not None else _format_name(fmt)


def _free_format_methods() -> list[str]:
    return [m for m in METHODS if declaration(m).quantize is not None and not declaration(m).fixed]


def _format_name(fmt: Any) -> str:
    from qtutor import formats

    return formats.get(fmt).name


def get(method: str):
    """The module implementing ``method`` (e.g. ``qtutor.methods.rtn``)."""
    name = str(method).lower()
    if name not in METHODS:
        raise ValueError(f"unknown method {method!r}; the methods are: {', '.join(METHODS)}")
    return importlib.import_module(f"qtutor.methods.{name}")


def declaration(method: str) -> Method:
    """The declared record of ``method`` (``qtutor.methods.<name>.METHOD``)."""
    return get(method).METHOD


def quantize_tensor(W: Any, fmt: Any = "default", method: str = "rtn", group_size: int | None | str = "default",
                    sym: bool | None = None, calib: Any = None, **method_kw) -> QuantizedTensor:
    """Quantize one weight ``W (out_features, in_features)`` to ``fmt`` with ``method``.

    ``fmt="default"``: INT4, or the format the method defines (LLM.int8(): INT8). ``group_size``: N > 0 groups
    of N along the input dimension, -1 one scale per output channel, 0 one scale per tensor, None a plain cast;
    ``"default"`` picks the format's usual granularity (int: 128, MX: 32, NVFP4: 16, NF4: 64, FP8: per channel).
    ``sym=None`` picks the format's default (integers: asymmetric, as GPTQ and AWQ; float formats are always
    symmetric).
    """
    from qtutor import formats

    declared = declaration(method)
    if declared.quantize is None:
        raise ValueError(f"{declared.name} has no per-tensor quantizer: it works on a whole model; use "
                         f"qt.quantize_model(model, {declared.name!r}, ...) or "
                         f"qtutor.eval.sweep.evaluate(model, tokenizer, {declared.name!r}, ...)")
    fmt, group_size, sym = declared.resolve(fmt, group_size, sym)
    fmt = formats.get(fmt)
    if group_size == "default":
        group_size = fmt.weight_group_size
    return declared.quantize(W, fmt, group_size=group_size, sym=sym, calib=calib, **method_kw)
