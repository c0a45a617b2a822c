"""Models: load one, walk its linear layers, capture what flows into them, swap their weights and back.

    model, tok = qt.load_model("tiny")                 # the embedded model, offline
    layers = qt.model.linear_layers(model)             # name, role (q/k/v/o/gate/up/down/...), shape
    X = qt.model.capture_inputs(model, calib)          # layer name -> inputs (tokens x in_features)
    with qt.model.swapped_weights(model, {name: W_hat}):
        ...                                            # the model computes with W_hat, then gets W back

This is the one place where torch tensors become NumPy arrays and back. Weights are always presented as
(out_features, in_features), whatever the layer type: GPT-2's Conv1D stores the transpose, and that is
handled here so that no method needs to know.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from qtutor.model.loading import load_model

# (pattern on the module's name, role); the first that matches wins
ROLE_PATTERNS = (
    (r"(^|\.)(q_proj|query)$", "q"),
    (r"(^|\.)(k_proj|key)$", "k"),
    (r"(^|\.)(v_proj|value)$", "v"),
    (r"(^|\.)(c_attn|qkv_proj|query_key_value|Wqkv)$", "qkv"),
    (r"(^|\.)(o_proj|out_proj|attn\.c_proj|dense)$", "o"),
    (r"(^|\.)(gate_proj|w1)$", "gate"),
    (r"(^|\.)(up_proj|w3|c_fc|fc1)$", "up"),
    (r"(^|\.)(down_proj|w2|mlp\.c_proj|fc2)$", "down"),
    (r"(^|\.)(lm_head|embed_out)$", "lm_head"),
)


@dataclass(frozen=True)
class LinearLayer:
    """One linear layer of a model: y = x W^T (+ b), W of shape (out_features, in_features)."""

    name: str
    module: Any
    role: str
    in_features: int
    out_features: int
    transposed: bool  # GPT-2's Conv1D keeps W^T in .weight

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)


def role_of(name: str) -> str:
    for pattern, role in ROLE_PATTERNS:
        if re.search(pattern, name):
            return role
    return "other"


def _as_linear(name: str, module: Any) -> LinearLayer | None:
    """The module as a LinearLayer (``nn.Linear`` or GPT-2's ``Conv1D``), or None if it is neither."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return LinearLayer(name, module, role_of(name), module.in_features, module.out_features, False)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        rows, columns = module.weight.shape  # (in, out)
        return LinearLayer(name, module, role_of(name), rows, columns, True)
    return None


def linear_layers(model: Any) -> list[LinearLayer]:
    """Every linear layer in module order (``nn.Linear`` and GPT-2's ``Conv1D``), with its role."""
    layers = (_as_linear(name, module) for name, module in model.named_modules())
    return [layer for layer in layers if layer is not None]


def find_layer(model: Any, name: str) -> LinearLayer:
    try:
        layer = _as_linear(name, model.get_submodule(name))
    except AttributeError:
        layer = None
    if layer is None:
        names = [layer.name for layer in linear_layers(model)]
        raise KeyError(f"no linear layer called {name!r}; e.g. {', '.join(names[:4])} ... ({len(names)} in all)")
    return layer


def replace_module(model: Any, name: str, replacement: Any) -> Any:
    """Put ``replacement`` where the submodule ``name`` (dotted, as ``named_modules`` gives it) is, and return
    the module it replaced (to put back later, or to read)."""
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    original = getattr(parent, attribute)
    setattr(parent, attribute, replacement)
    return original


def on_device(layer: LinearLayer) -> bool:
    """True when the layer's weight lives on a CUDA device and CuPy can work on it there."""
    from qtutor.backend import has_gpu

    return bool(layer.module.weight.is_cuda) and has_gpu()


def get_weight(layer: LinearLayer, device: bool = False) -> Any:
    """A float32 copy of W (out_features, in_features): a NumPy array, or with ``device=True`` and the layer on a
    GPU (:func:`on_device`) a CuPy array on that GPU, handed over through DLPack with no trip through the host."""
    from qtutor.backend import from_torch

    weight = layer.module.weight.detach().float()
    weight = weight.T if layer.transposed else weight
    if device and on_device(layer):
        return from_torch(weight.contiguous().clone())  # the clone is the array's own memory
    return np.array(weight.cpu().numpy(), dtype=np.float32)


def set_weight(layer: LinearLayer, W: Any) -> None:
    """Write W (out_features, in_features) into the layer, in the layer's dtype and device. W may be a NumPy or
    a CuPy array (a CuPy array on the layer's GPU is copied there through DLPack, not through the host)."""
    import torch

    from qtutor.backend import array_namespace, to_torch

    xp = array_namespace(W)
    W = xp.asarray(W, dtype=np.float32)
    if tuple(W.shape) != layer.shape:
        raise ValueError(f"{layer.name}: weight of shape {tuple(W.shape)} given, the layer needs {layer.shape}")
    parameter = layer.module.weight
    value = to_torch(xp.ascontiguousarray(W.T if layer.transposed else W))
    with torch.no_grad():
        parameter.copy_(value.to(dtype=parameter.dtype, device=parameter.device))


class WeightBackup:
    """A copy of some layers' weights, to put back with :meth:`restore` (bit-exact)."""

    def __init__(self, model: Any, names: Iterable[str] | None = None):
        layers = linear_layers(model) if names is None else [find_layer(model, name) for name in dict.fromkeys(names)]
        self.saved = {layer.name: (layer, layer.module.weight.detach().clone()) for layer in layers}

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for layer, original in self.saved.values():
                layer.module.weight.copy_(original)


@contextlib.contextmanager
def swapped_weights(model: Any, weights: dict[str, Any]):
    """Within the block, the named layers compute with the given weights; the originals come back on exit,
    exceptions included."""
    backup = WeightBackup(model, weights)
    try:
        for name, W in weights.items():
            set_weight(find_layer(model, name), W)
        yield model
    finally:
        backup.restore()


def run_with_input_hooks(model: Any, tokens: Any, hooks: dict[str, Any], batch_size: int = 8) -> None:
    """Run ``tokens`` (n_sequences x seq_len ids, or one sequence) through the model, batch by batch, with
    ``hooks[name](module, args)`` as a forward pre-hook on each named module; the hooks are always removed."""
    import torch

    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if tokens.ndim == 1:
        tokens = tokens[None, :]
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(hook) for name, hook in hooks.items()]
    try:
        with torch.no_grad():
            for start in range(0, tokens.shape[0], batch_size):
                model(input_ids=tokens[start:start + batch_size].to(model.device))
    finally:
        for handle in handles:
            handle.remove()


def capture_inputs(model: Any, tokens: Any, layers: Iterable[str] | None = None, batch_size: int = 8,
                   max_tokens: int | None = None) -> dict[str, np.ndarray]:
    """Run ``tokens`` (n_sequences x seq_len ids) through the model and return each chosen layer's inputs as a
    float32 array (tokens x in_features), collected by forward pre-hooks that are always removed afterwards."""
    wanted = None if layers is None else set(layers)
    chosen = [layer for layer in linear_layers(model) if wanted is None or layer.name in wanted]
    if not chosen:
        raise ValueError("no layers to capture (check the names against qt.model.linear_layers(model))")
    captured: dict[str, list[np.ndarray]] = {layer.name: [] for layer in chosen}

    def recorder(name: str):
        def record(module, args):
            captured[name].append(_as_rows(args[0]))
        return record

    run_with_input_hooks(model, tokens, {layer.name: recorder(layer.name) for layer in chosen}, batch_size)
    return {name: np.concatenate(parts, axis=0)[:max_tokens] for name, parts in captured.items()}



class _StopForward(Exception):
    """Raised by a hook to end a forward pass early: the modules after it are not needed."""


def capture_calls(model: Any, tokens: Any, modules: Iterable[str], batch_size: int = 8,
                  stop_after: str | None = None) -> dict[str, list[tuple[tuple, dict, Any]]]:
    """Run ``tokens`` through the model (no KV cache) and record every call of each named module as
    ``(args, kwargs, output)``: enough to call the module again on the same inputs, as AWQ does to compare
    candidate weights on a block's attention or MLP output. The output is the first element when the module
    returns a tuple. With ``stop_after``, each forward pass ends as soon as that module has returned."""
    import torch

    named = dict(model.named_modules())
    modules = list(modules)
    unknown = [name for name in modules + ([stop_after] if stop_after else []) if name not in named]
    if unknown:
        raise KeyError(f"no module called {unknown[0]!r} in the model (see model.named_modules())")
    calls: dict[str, list] = {name: [] for name in modules}

    def stop(module, args, output):
        raise _StopForward

    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    if tokens.ndim == 1:
        tokens = tokens[None, :]
    handles = [named[name].register_forward_hook(_call_recorder(calls[name]), with_kwargs=True) for name in modules]
    if stop_after:
        handles.append(named[stop_after].register_forward_hook(stop))
    try:
        with torch.no_grad():
            for start in range(0, tokens.shape[0], batch_size):
                try:
                    model(input_ids=tokens[start:start + batch_size].to(model.device), use_cache=False)
                except _StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


def call_again(module: Any, calls: list[tuple[tuple, dict, Any]]) -> np.ndarray:
    """Call ``module`` on every recorded input (:func:`capture_calls`) with its current weights; the outputs
    as one float32 array (tokens x features)."""
    import torch

    outputs = []
    with torch.no_grad():
        for args, kwargs, _ in calls:
            output = module(*args, **kwargs)
            output = output[0] if isinstance(output, tuple) else output
            outputs.append(output.float().reshape(-1, output.shape[-1]).cpu().numpy())
    return np.concatenate(outputs, axis=0)


_BLOCK_PREFIX = re.compile(r"^(.*?\.\d+)\.")  # "model.layers.3.mlp.up_proj" -> "model.layers.3"


def block_name(layer_name: str) -> str | None:
    """The decoder block a linear layer sits in (``model.layers.3.mlp.up_proj`` -> ``model.layers.3``)."""
    match = _BLOCK_PREFIX.match(layer_name)
    return match.group(1) if match else None


def blockwise_calls(model: Any, tokens: Any, modules: dict[str, list[str]], batch_size: int = 8):
    """Record calls of modules inside decoder blocks, block by block, each block fed the outputs of the blocks
    before it *as they are now*.

    ``modules`` maps a block (``"model.layers.3"``) to the modules inside it whose calls to record. Yields
    ``(block, {module: [(args, kwargs, output), ...]})`` in the model's order (as :func:`capture_calls` records
    them). When the caller asks for the next block, the current one is run once more on its recorded inputs,
    with whatever weights it has then, and its outputs are the next block's inputs: a caller that quantizes (or
    rescales) a block before moving on feeds the later blocks through the changed one, and the model runs once
    in all instead of once per block. This is how the reference implementations of GPTQ and AWQ do it: record
    the first block's inputs (hidden states, attention mask, positions) with one forward pass that stops there,
    then carry the hidden states along by hand."""
    import torch

    named = dict(model.named_modules())
    missing = [block for block in modules if block not in named]
    if missing:
        raise KeyError(f"no block called {missing[0]!r} in the model (see model.named_modules())")
    remaining = {block: list(names) for block, names in modules.items() if names}
    if not remaining:
        return
    first = _first_block(named, next(iter(remaining)))
    calls = capture_calls(model, tokens, [first], batch_size=batch_size, stop_after=first)[first]
    hidden = [args[0] if args else kwargs["hidden_states"] for args, kwargs, _ in calls]
    for name in sorted((n for n in named if _same_stack(n, first)), key=lambda n: int(n.rsplit(".", 1)[1])):
        block = named[name]
        if name in remaining:
            recorded: dict[str, list] = {module: [] for module in remaining[name]}
            handles = [named[module].register_forward_hook(_call_recorder(recorded[module]), with_kwargs=True)
                       for module in recorded]
            try:
                with torch.no_grad():
                    for x, call in zip(hidden, calls):
                        _call_with(block, call, x)
            finally:
                for handle in handles:
                    handle.remove()
            yield name, recorded
            del remaining[name]
        if not remaining:
            return
        with torch.no_grad():  # the block as it is now (quantized, if the caller did) feeds the next one
            hidden = [_first(_call_with(block, call, x)) for x, call in zip(hidden, calls)]


def blockwise_inputs(model: Any, tokens: Any, layers: Iterable[LinearLayer], batch_size: int = 8):
    """The inputs of ``layers`` (tokens x in_features) block by block, as :func:`blockwise_calls` feeds them:
    yields ``(block, {layer name: inputs})``, the blocks before fed through as they are when the caller moves
    on (GPTQ's sequential mode). Layers outside the blocks (an output head) come last, from a full forward."""
    wanted: dict[str, list[str]] = {}
    outside = []
    for layer in layers:
        block = block_name(layer.name)
        if block is None:
            outside.append(layer.name)
        else:
            wanted.setdefault(block, []).append(layer.name)
    for block, recorded in blockwise_calls(model, tokens, wanted, batch_size):
        yield block, {name: np.concatenate([_as_rows(args[0] if args else next(iter(kwargs.values())))
                                            for args, kwargs, _ in calls], axis=0)
                      for name, calls in recorded.items()}
    if outside:
        yield None, capture_inputs(model, tokens, outside, batch_size=batch_size)


def _as_rows(x: Any) -> np.ndarray:
    x = x.detach().float()
    return x.reshape(-1, x.shape[-1]).cpu().numpy()


def _first_block(named: dict, name: str) -> str:
    """The first block of the stack that ``name`` belongs to (``model.layers.7`` -> ``model.layers.0``)."""
    stack = name.rsplit(".", 1)[0]
    return min((n for n in named if n.rsplit(".", 1)[0] == stack and n.rsplit(".", 1)[-1].isdigit()),
               key=lambda n: int(n.rsplit(".", 1)[1]))


def _same_stack(name: str, first: str) -> bool:
    """Whether ``name`` is a block of the same stack as ``first`` (``model.layers.N``)."""
    stack = first.rsplit(".", 1)[0]
    return name.rsplit(".", 1)[0] == stack and name.rsplit(".", 1)[-1].isdigit()


def _call_with(block: Any, call: tuple, hidden: Any) -> Any:
    """Call a block as it was called in the recorded forward pass, with other hidden states."""
    args, kwargs, _ = call
    if args:
        return block(hidden, *args[1:], **kwargs)
    return block(**{**kwargs, "hidden_states": hidden})


def _call_recorder(calls: list):
    def record(module, args, kwargs, output):
        calls.append((args, dict(kwargs), output[0] if isinstance(output, tuple) else output))
    return record


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


__all__ = ["LinearLayer", "WeightBackup", "block_name", "blockwise_calls", "blockwise_inputs", "call_again", "capture_calls",
           "capture_inputs", "find_layer", "get_weight", "linear_layers", "load_model", "on_device", "role_of",
           "set_weight", "swapped_weights"]
