"""The methods' model-level phases, each under the key that a method's declaration names.

A method declares once, at the end of its own file, what it needs and does (``METHOD = Method(...)``, see
:mod:`qtutor.methods`). The phases that act on a torch model are implemented here, in four small tables, and the
callers run whichever a declaration names:

    TRANSFORMS    before the weights are rounded, change the model without changing what it computes
                  (AWQ's searched and folded scales, SmoothQuant's smoothing, AffineQuant's learned matrices);
                  run by ``quantize_model``
    HOOKS         while the model runs, every linear computes the method's own product (LLM.int8()); installed
                  by ``qtutor.eval.sweep.evaluate`` on the float model, before its weights are rounded
    ACTIVATIONS   how run-time activation quantization rounds each linear's input: as it is, or in the rotated
                  basis of :mod:`qtutor.methods.rotation`; installed by ``evaluate`` when activations are quantized
    REPLACEMENTS  instead of per-tensor quantization, every weight replaced at once (a llama.cpp GGUF mix)

Every phase hands back something that undoes it (``restore()`` or a context manager), so the model comes back
bit for bit. A phase takes its own options out of ``options``; what is left goes to the per-tensor quantizer.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from qtutor.model import activations


@dataclass
class Transformed:
    """What a transform did: ``handle.restore()`` undoes it; ``layer_options[name]`` go to that layer's quantizer."""

    handle: Any
    layer_options: dict = field(default_factory=dict)


# ---- transforms: run by quantize_model before the weights are rounded --------------------------------------------
def awq_scales(model: Any, calib: Any, fmt: Any, group_size: Any, sym: Any, options: dict, *,
               layers: list[str] | None, skip: tuple[str, ...], progress: bool) -> Transformed | None:
    """AWQ as the reference: one scale per scaling group (q, k and v share one), searched on the output of the
    module around its readers and folded into the norms and linears before them; then each layer only clips and
    rounds (``prescaled=True``). ``scope="layer"``, or a subset of ``layers``: nothing is folded, and each layer
    searches its own scale on its own output."""
    from qtutor.model.awq_scaling import scale_model

    scope = options.pop("scope", "block")
    if scope not in ("block", "layer"):
        raise ValueError(f"scope={scope!r}: AWQ searches its scales per 'block' (the reference) or per 'layer'")
    if layers is not None or scope == "layer":
        return None
    scaled = scale_model(model, calib, fmt, group_size, sym, skip=skip, progress=progress,
                         duo_scaling=options.get("duo_scaling", False),
                         search_tokens=options.pop("search_tokens", None))
    prescaled = {reader: {"prescaled": True} for group in scaled.groups for reader in group.readers}
    return Transformed(scaled, prescaled)


def smoothing(model: Any, calib: Any, fmt: Any, group_size: Any, sym: Any, options: dict, *,
              layers: list[str] | None, skip: tuple[str, ...], progress: bool) -> Transformed:
    """SmoothQuant: the smoothing scales of migration strength ``alpha`` folded into the norms (and with
    ``smooth_linears`` into v_proj and up_proj too); the float model computes what it did."""
    from qtutor.model.smoothing import smooth_model

    smoothed = smooth_model(model, calib, options.pop("alpha", 0.5),
                            linear_sources=options.pop("smooth_linears", False))
    return Transformed(smoothed)


def affine(model: Any, calib: Any, fmt: Any, group_size: Any, sym: Any, options: dict, *,
           layers: list[str] | None, skip: tuple[str, ...], progress: bool) -> Transformed:
    """AffineQuant: each group's invertible A learned on the calibration inputs and applied (the readers' weights
    W A^T with A^-1 after the norm at run time, or folded where it can be); each reader then carries its share of a
    run-time A^-1 in its bits per weight."""
    from qtutor.model.affine import affine_model

    names = ("alpha", "ln_matrix", "epochs", "steps", "lr", "sf")
    chosen = {name: options.pop(name) for name in names if name in options}
    handle = affine_model(model, calib, fmt, group_size, sym, layers=layers, skip=skip, progress=progress,
                          **chosen)
    return Transformed(handle, {reader: {"side_bits": bits} for reader, bits in handle.side_bits.items()})


TRANSFORMS: dict[str, Callable[..., Transformed | None]] = {"awq_scales": awq_scales, "smoothing": smoothing,
                                                            "affine": affine}


# ---- hooks: every linear's product, while the model runs ----------------------------------------------------------
@contextlib.contextmanager
def llm_int8_product(model: Any, options: dict) -> Iterator[Callable[[], dict]]:
    """Every linear computes the LLM.int8() product from the weights it has now (the float ones: the hook is
    installed before they are rounded). Yields what the point reports once the model has run."""
    from qtutor.methods.llm_int8 import DEFAULT_THRESHOLD

    with activations.llm_int8(model, options.get("threshold", DEFAULT_THRESHOLD)) as stats:
        yield lambda: {"outlier_fraction": stats.outlier_fraction()}


HOOKS: dict[str, Callable[..., Any]] = {"llm_int8": llm_int8_product}


# ---- activations: how each linear's input is rounded at run time ---------------------------------------------------
def plain_inputs(model: Any, act_format: str, options: dict) -> Any:
    """Each input as it is, per token (dynamic), per tensor, or with calibrated static scales (``act_scales``)."""
    return activations.quantized_inputs(model, act_format, options.get("act_granularity", "token"),
                                        scales=options.get("act_scales"))


def rotated_inputs(model: Any, act_format: str, options: dict) -> Any:
    """Q(x R) R^T with the R that rotated the weights (the same ``seed``): W4A4 in a rotated basis."""
    granularity = options.get("act_granularity", "token")
    if granularity == "static":
        raise ValueError("static activation scales are not calibrated in a rotated basis; use act_granularity="
                         "'token' with this method")
    return activations.quantized_inputs(model, act_format, granularity, rotation_seed=options.get("seed", 0))


ACTIVATIONS: dict[str, Callable[..., Any]] = {"plain": plain_inputs, "rotated": rotated_inputs}


# ---- replacements: every weight at once -----------------------------------------------------------------------------
def gguf_mix(model: Any, fmt: str, *, progress: bool = False, imatrix: Any = None) -> Any:
    """A llama.cpp mix such as Q4_K_M: each tensor llama.cpp would quantize (the tied embedding included) becomes
    what its blocks decode to, weighted by ``imatrix`` where given; the report restores the weights."""
    from qtutor.methods.gguf.apply import apply_mix

    return apply_mix(model, fmt, progress=progress, imatrix=imatrix)


REPLACEMENTS: dict[str, Callable[..., Any]] = {"gguf_mix": gguf_mix}
