"""Rescale input channels without changing the float model: the step SmoothQuant and AWQ share.

A linear layer reads x and computes y = x W^T. Multiply its column j by s_j and divide x_j by s_j, and y does
not move:

    y = (x diag(s)^-1) (W diag(s))^T

The division of x costs nothing when x comes straight out of something with a per-channel weight of its own,
the *source*, which absorbs 1/s:

* a normalization layer (RMSNorm / LayerNorm): its weight (and bias) divided by s;
* another linear layer whose output is x, up to an operation that commutes with a per-channel scale:
  ``v_proj`` feeds ``o_proj`` through the attention average (softmax(q k^T) v is linear in v, channel by
  channel), ``up_proj`` feeds ``down_proj`` through the product silu(gate) * up, OPT's ``fc1`` feeds ``fc2``
  through a ReLU (relu(x / s) = relu(x) / s for s > 0). Its rows (and bias) divided by s.

Every linear that reads the same x must take the same s, so a *scaling group* is (source, readers). SmoothQuant
(Xiao et al., 2022) smooths the norm groups; AWQ (Lin et al., 2023) scales all four groups of a Llama block and
compares candidates on the output of a module around the readers (the *inspected* module: the whole attention,
the MLP, or the reader itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ScalingGroup:
    """x = source(...) is read by every linear in ``readers``; AWQ measures candidates on ``inspect``'s output."""

    source: str
    readers: tuple[str, ...]
    inspect: str
    source_is_linear: bool
    block: str  # the decoder block's module name (``model.layers.3``)


# (source, readers, inspected module) as module names inside one decoder block; the first match per source wins
SCALING_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),  # Llama
    ("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),  # OPT
    ("self_attn.v_proj", ("self_attn.out_proj",), "self_attn.out_proj"),
    ("final_layer_norm", ("fc1",), "fc1"),
    ("fc1", ("fc2",), "fc2"),  # OPT's ReLU commutes with a positive per-channel scale: relu(x / s) = relu(x) / s
    ("ln_1", ("attn.c_attn",), "attn.c_attn"),  # GPT-2 (q, k and v fused in one linear)
    ("ln_2", ("mlp.c_fc",), "mlp"),
)
THROUGH_RELU = {"fc1"}  # linear sources whose output reaches the readers through the model's activation


def scaling_groups(model: Any, linear_sources: bool = True) -> list[ScalingGroup]:
    """Every scaling group of ``model``, in module order. ``linear_sources=False`` keeps the norm groups only
    (SmoothQuant's). A linear source needs as many outputs as its reader has inputs (grouped-query attention's
    v_proj has fewer than o_proj reads, so that pair is left out)."""
    from qtutor.model import linear_layers

    linears = {layer.name: layer for layer in linear_layers(model)}
    modules = dict(model.named_modules())
    groups = []
    for name in modules:
        for source, readers, inspect in SCALING_GROUPS:
            if not (name == source or name.endswith("." + source)):
                continue
            if source in THROUGH_RELU and getattr(model.config, "activation_function", "relu") != "relu":
                break  # a scale passes through ReLU only: another activation would change the float model
            block = name[: len(name) - len(source)].rstrip(".")
            full = [f"{block}.{reader}" if block else reader for reader in readers]
            is_linear = name in linears
            if not all(reader in linears for reader in full) or (is_linear and not linear_sources):
                continue
            if is_linear and any(linears[name].out_features != linears[r].in_features for r in full):
                continue
            groups.append(ScalingGroup(name, tuple(full), f"{block}.{inspect}" if block else inspect, is_linear,
                                        block))
            break
    return groups


class ScaledModel:
    """A model whose scaling groups are being rescaled in place; ``restore()`` (or leaving the ``with`` block)
    puts every touched weight back bit-exactly.

    ``scales``: source name -> s. Methods may keep what they found in ``searches`` (AWQ: alpha and its losses)
    and ``difficulty`` (SmoothQuant: channel-peak ratios before and after)."""

    def __init__(self, model: Any):
        self.model = model
        self.groups: list[ScalingGroup] = []
        self.scales: dict[str, np.ndarray] = {}
        self.searches: dict[str, dict] = {}
        self.difficulty: dict[str, dict] = {}
        self._saved: dict[str, tuple[Any, Any, Any]] = {}  # module name -> (module, weight, bias) originals

    def _save(self, name: str, module: Any) -> None:
        if name not in self._saved:
            bias = getattr(module, "bias", None)
            original_bias = None if bias is None else bias.detach().clone()
            self._saved[name] = (module, module.weight.detach().clone(), original_bias)

    def apply(self, group: ScalingGroup, s: Any) -> None:
        """Fold s into the model: the source's weight (norm) or rows (linear) and bias divided by s, each reader's
        columns multiplied by s. The float model computes the same function, up to float rounding."""
        import torch

        from qtutor.model import find_layer, get_weight, set_weight

        s = np.asarray(s, dtype=np.float32)
        modules = dict(self.model.named_modules())
        source = modules[group.source]
        self._save(group.source, source)
        for reader in group.readers:
            self._save(reader, modules[reader])
        if group.source_is_linear:
            layer = find_layer(self.model, group.source)
            set_weight(layer, get_weight(layer) / s[:, None])
        else:
            with torch.no_grad():
                source.weight.div_(torch.from_numpy(s).to(source.weight))
        bias = getattr(source, "bias", None)
        if bias is not None:
            with torch.no_grad():
                bias.div_(torch.from_numpy(s).to(bias))
        for reader in group.readers:
            layer = find_layer(self.model, reader)
            set_weight(layer, get_weight(layer) * s[None, :])
        self.scales[group.source] = s
        self.groups.append(group)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for module, weight, bias in self._saved.values():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)

    def __enter__(self) -> "ScaledModel":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
