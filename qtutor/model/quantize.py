"""Quantize a whole model: every linear layer through one method and one format, fake-quant, restorable.

    report = qt.quantize_model(model, method="gptq", fmt="int4", group_size=128, calib=qt.data.calibration(32, 256))
    print(report.table())          # per layer: weight MSE, output error on the calibration inputs, bits, bytes
    qt.perplexity(model, tok)      # the model now computes with the dequantized weights
    report.restore()               # the original weights back (or use `with qt.quantize_model(...) as report:`)

Fake quantization: each weight is replaced by its dequantized value, so the float model computes exactly
what a quantized kernel would (up to the kernel's own rounding), and perplexity measures the format's and the
method's error, nothing else.

What a method needs and does comes from its declaration (``qtutor.methods.<name>.METHOD``): calibrated
methods refuse to run without ``calib``; those that read their layers' inputs (GPTQ, AWQ) get them captured from
the calibration text; a *sequential* one (GPTQ, as in the reference) gets them block by block, the inputs of
block i captured with blocks < i already quantized, so later layers learn to live with the earlier layers'
errors; a method with a model transform (AWQ's folded scales, SmoothQuant's smoothing; :mod:`qtutor.model.phases`)
has it applied first, and ``restore()`` undoes both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qtutor import formats
from qtutor.backend import array_namespace, to_device
from qtutor.methods import declaration
from qtutor.metrics import relative_output_error  # the report's per-layer metric (its name answers here too)


@dataclass
class LayerResult:
    name: str
    role: str
    shape: tuple[int, int]
    bits_per_weight: float
    nbytes: float
    weight_mse: float
    output_error: float | None  # ||W X - W_hat X||^2 / ||W X||^2 on the calibration inputs
    seconds: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QuantizationReport:
    """What ``quantize_model`` did, layer by layer; ``restore()`` puts the original weights back."""

    method: str
    fmt: str
    group_size: Any
    sym: Any
    layers: list[LayerResult] = field(default_factory=list)
    tensors: dict = field(default_factory=dict)  # name -> QuantizedTensor (kept when keep_tensors=True)
    backup: Any = None
    seconds: float = 0.0
    scaling: Any = None  # the method's model transform, if it has one (AWQ's folded scales, SmoothQuant's smoothing)

    @property
    def bits_per_weight(self) -> float:
        """Over the quantized layers: total storage bits / total weights."""
        weights = sum(layer.shape[0] * layer.shape[1] for layer in self.layers)
        return sum(layer.nbytes * 8 for layer in self.layers) / max(weights, 1)

    @property
    def nbytes(self) -> float:
        return sum(layer.nbytes for layer in self.layers)

    def restore(self) -> None:
        if self.backup is not None:
            self.backup.restore()
            self.backup = None

    def __enter__(self) -> "QuantizationReport":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def rows(self) -> list[dict]:
        return [layer.as_dict() for layer in self.layers]

    def table(self) -> str:
        lines = [f"{'layer':42s} {'role':7s} {'shape':>11s} {'bits/w':>7s} {'weight MSE':>11s} {'output err':>10s}"]
        for layer in self.layers:
            error = "-" if layer.output_error is None else f"{layer.output_error:.3e}"
            lines.append(f"{layer.name:42s} {layer.role:7s} {str(layer.shape[0]) + 'x' + str(layer.shape[1]):>11s} "
                         f"{layer.bits_per_weight:7.3f} {layer.weight_mse:11.3e} {error:>10s}")
        lines.append(f"{len(self.layers)} layers, {self.bits_per_weight:.3f} bits/weight, "
                     f"{self.nbytes / 1e6:.2f} MB, {self.seconds:.1f} s")
        return "\n".join(lines)


class Restorables:
    """Several restorable changes undone as one (a transform, e.g. AWQ's folded scales, and the quantized weights)."""

    def __init__(self, *parts: Any):
        self.parts = parts

    def restore(self) -> None:
        for part in self.parts:
            part.restore()


def quantize_model(model: Any, method: str = "rtn", fmt: Any = "default", group_size: Any = "default",
                   sym: bool | None = None, calib: Any = None, *, skip: tuple[str, ...] = ("lm_head",),
                   layers: list[str] | None = None, keep_tensors: bool = False, progress: bool = True,
                   **method_kw) -> QuantizationReport:
    """Fake-quantize every linear layer of ``model`` (except roles in ``skip``) and report per layer.

    ``fmt="default"``: INT4, or the format the method defines (LLM.int8(): INT8 per channel). ``calib``:
    calibration token ids (n_samples x seq_len, e.g. ``qt.data.calibration(32, 256)``); required by the
    calibrated methods (GPTQ, AWQ, SmoothQuant), optional for RTN (then the report also gives each layer's output
    error). ``method_kw`` go to the method's transform (which takes its own, e.g. AWQ's ``search_tokens``) and to
    its per-tensor quantizer.

    With the model on a CUDA device and CuPy installed, a method that takes device arrays (RTN, GPTQ:
    ``Method.device_arrays``) gets each weight as a CuPy array handed over through DLPack, and its inputs moved
    to the device, so the formats' and GPTQ's kernels run there and the quantized weight goes back the same
    way; the other methods, and ggml's block types, work on host copies. On the CPU nothing changes.
    """
    from tqdm.auto import tqdm

    from qtutor.model import WeightBackup, blockwise_inputs, capture_inputs, get_weight, linear_layers, set_weight
    from qtutor.model.phases import TRANSFORMS

    declared = declaration(method)
    method = declared.name
    rounding = declared if declared.quantize or not declared.weights else declaration(declared.weights)
    quantizer = rounding.quantize
    if quantizer is None:
        raise ValueError(f"{method} has no per-layer quantizer: it replaces the model's weights as a whole; measure "
                         f"it with qtutor.eval.sweep.evaluate(model, tokenizer, {method!r}, fmt)")
    fmt, group_size, sym = declared.resolve(fmt, group_size, sym)
    fmt_object = formats.get(fmt)
    if declared.calibration and calib is None:
        raise ValueError(f"{method} needs calibration data: calib=qt.data.calibration(n_samples=32, seq_len=256)")
    targets = [layer for layer in linear_layers(model)
               if layer.role not in skip and (layers is None or layer.name in layers)]
    if not targets:
        raise ValueError("no linear layers to quantize (check `layers=` and `skip=`)")
    if group_size == "default":
        group_size = default_group_size(fmt_object, [layer.shape[1] for layer in targets])
    backup = WeightBackup(model, [layer.name for layer in targets])
    report = QuantizationReport(method, fmt_object.name, group_size, sym, backup=backup)
    started = time.time()
    layer_options: dict[str, dict] = {}
    if declared.transform is not None:
        transformed = TRANSFORMS[declared.transform](model, calib, fmt_object, group_size, sym, method_kw,
                                                     layers=layers, skip=skip, progress=progress)
        if transformed is not None:
            report.backup, report.scaling = Restorables(transformed.handle, backup), transformed.handle
            layer_options = transformed.layer_options
    # the layers' inputs: for a method that reads them, and for any other given calib (the per-layer output
    # errors), but not when calib only feeds the transform (SmoothQuant: every layer's inputs would be GBs)
    wants_inputs = calib is not None and (declared.layer_inputs or not declared.calibration)
    if not wants_inputs:
        batches = iter([(None, {})])
    elif declared.sequential:  # block by block, each block fed by the blocks before it, already quantized
        batches = blockwise_inputs(model, calib, targets)
    else:
        batches = iter([(None, capture_inputs(model, calib, [layer.name for layer in targets]))])
    by_name = {layer.name: layer for layer in targets}
    # on a GPU the weights (and their inputs) stay there, for a quantizer that takes device arrays
    keep_on_device = rounding.device_arrays and fmt_object.encodes_on_device
    bar = tqdm(total=len(targets), desc=f"{method} {fmt_object.name}", disable=not progress, leave=False)
    try:
        for _, inputs in batches:
            group = [by_name[name] for name in inputs] if inputs else targets
            for layer in group:
                W = get_weight(layer, device=keep_on_device)
                xp = array_namespace(W)
                X = inputs.get(layer.name)
                X = X if X is None or xp is np else to_device(X)
                t0 = time.time()
                options = {**method_kw, **layer_options.get(layer.name, {})}
                q = quantizer(W, fmt_object, group_size=group_size, sym=sym, calib=X, name=layer.name,
                              role=layer.role, **options)
                W_hat = xp.asarray(q.dequantize(), dtype=np.float32)
                set_weight(layer, W_hat)
                report.layers.append(LayerResult(
                    name=layer.name, role=layer.role, shape=tuple(W.shape), bits_per_weight=q.bits_per_weight,
                    nbytes=q.nbytes, weight_mse=float(xp.mean((W_hat - W) ** 2)),
                    output_error=None if X is None else relative_output_error(W, W_hat, X),
                    seconds=time.time() - t0))
                if keep_tensors:
                    report.tensors[layer.name] = q
                bar.update(1)
    except BaseException:
        report.restore()  # a failure leaves the model as it was
        raise
    finally:
        bar.close()
    report.seconds = time.time() - started
    return report


def default_group_size(fmt: Any, row_lengths: list[int]) -> Any:
    """The format's usual group size if it divides every row, else the largest power of two below it that does.

    SmolLM2's rows are 576 = 2^6 * 9 and 1536 weights long: INT4's usual 128 divides neither 576, so its
    default there is 64. Formats with a fixed block (MX: 32, NVFP4: 16) or none (per channel, a cast) keep theirs."""
    usual = fmt.weight_group_size
    fixed_block = fmt.family not in ("integer", "normalfloat")
    if fixed_block or not isinstance(usual, int) or usual <= 0 or all(row % usual == 0 for row in row_lengths):
        return usual
    size = usual
    while size > 1 and any(row % size for row in row_lengths):
        size //= 2
    return size if size >= 16 else -1  # tiny groups cost more in scales than they save: one scale per row


def quantize_weights(model: Any, method: str = "rtn", fmt: Any = "default", group_size: Any = "default",
                     sym: bool | None = None, calib: Any = None, *, progress: bool = True, **method_kw) -> Any:
    """The weights of ``model`` quantized by ``method``, whichever way the method works: layer by layer through
    :func:`quantize_model`, or all at once for a method that replaces the whole model's weights (a GGUF mix,
    ``method="gguf", fmt="Q4_K_M"``: the tied embedding too). ``calib`` reaches only the methods that use it.
    Returns the method's report, which restores the weights as a context manager (``with``) or ``restore()``."""
    from qtutor.model import phases

    declared = declaration(method)
    if declared.replace is not None:
        return phases.REPLACEMENTS[declared.replace](model, fmt, progress=progress, **method_kw)
    return quantize_model(model, method, fmt, group_size, sym, calib if declared.calibration else None,
                          progress=progress, **method_kw)

