"""AffineQuant on a whole model: learn each group's invertible A from calibration inputs, then apply it.

The mathematics (the loss, its closed-form gradient, the gradual mask, Adam) is in
:mod:`qtutor.methods.affinequant`, arrays in and arrays out; this is the model's half. One pass of the
calibration text collects, for every group, the Gram matrix H = X^T X of its inputs and max|x_j|. Then, block by
block:

* ``input_layernorm -> q, k, v`` and ``post_attention_layernorm -> gate, up``: A on the readers' shared input.
  With ``ln_matrix=True`` (the reference) the readers' weights become W A^T and the norm's output is multiplied
  by A^-1 at run time (a forward hook, here; the deployed model stores A^-1, whose float16 bits each reader
  carries a share of). With ``ln_matrix=False`` A stays diagonal and is folded into the norm's weight.
* ``v_proj -> o_proj`` (Llama blocks): A block-diagonal, one block per key/value head, learned after q, k, v's A
  (on the v weight it left), folded into v_proj's rows (A^-T W_v) and o_proj's columns (W_o A^T, each query head's
  columns with its key/value head's block).

The float model computes what it did (up to float rounding); ``restore()`` undoes everything bit for bit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from qtutor.methods import affinequant as aq
from qtutor.model import find_layer, get_weight, linear_layers, run_with_input_hooks, set_weight
from qtutor.model.scaling import ScaledModel, ScalingGroup, scaling_groups


class AffineModel(ScaledModel):
    """A model with AffineQuant's transforms applied; ``learned[group name]`` holds each group's
    :class:`~qtutor.methods.affinequant.Learned`, ``side_bits[reader]`` each reader's share of a run-time A^-1."""

    def __init__(self, model: Any):
        super().__init__(model)
        self.learned: dict[str, aq.Learned] = {}
        self.side_bits: dict[str, int] = {}
        self._hooks: list[Any] = []

    def multiply_output(self, module_name: str, A_inv: np.ndarray) -> None:
        """From now on, ``module_name``'s output is multiplied by A^-1 (the reference's ``c_inverse``)."""
        import torch

        module = self.model.get_submodule(module_name)
        matrix = torch.from_numpy(np.asarray(A_inv, dtype=np.float32)).to(module.weight.device)

        def times_inverse(mod, args, output):
            return (output.float() @ matrix).to(output.dtype)

        self._hooks.append(module.register_forward_hook(times_inverse))

    def transform_weight(self, name: str, W_new: np.ndarray) -> None:
        self._save(name, self.model.get_submodule(name))
        set_weight(find_layer(self.model, name), W_new)

    def restore(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        super().restore()


def collect_statistics(model: Any, calib: Any, names: list[str], batch_size: int = 8) -> dict[str, dict]:
    """For each named linear: H = X^T X of its inputs (float64) and max|x_j|, from one pass of ``calib``."""
    stats: dict[str, dict] = {}

    def recorder(name: str):
        def record(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1]).cpu().numpy().astype(np.float64)
            if not np.all(np.isfinite(x)):
                raise ValueError(f"AffineQuant: the calibration inputs of {name} contain NaN/Inf; the model produces "
                                 "non-finite activations on this text")
            entry = stats.setdefault(name, {"H": np.zeros((x.shape[1],) * 2), "absmax": np.zeros(x.shape[1]),
                                            "tokens": 0})
            entry["H"] += x.T @ x
            entry["absmax"] = np.maximum(entry["absmax"], np.abs(x).max(axis=0))
            entry["tokens"] += x.shape[0]
        return record

    run_with_input_hooks(model, calib, {name: recorder(name) for name in names}, batch_size)
    missing = [name for name in names if stats.get(name, {}).get("tokens", 0) == 0]
    if missing:
        raise ValueError(f"AffineQuant: no calibration tokens reached {missing[0]}; give longer calibration text")
    return stats


def value_output_pairs(model: Any, wanted: set[str]) -> list[tuple[str, str]]:
    """(v_proj, o_proj) of every Llama-style attention whose two linears are both to be quantized."""
    linears = {layer.name for layer in linear_layers(model)}
    pairs = []
    for name in linears:
        if name.endswith("self_attn.v_proj"):
            output = name[: -len("v_proj")] + "o_proj"
            if output in linears and name in wanted and output in wanted:
                pairs.append((name, output))
    return sorted(pairs, key=lambda pair: [int(p) if p.isdigit() else p for p in pair[0].split(".")])


def head_index(model: Any) -> tuple[np.ndarray, int]:
    """For each input column of o_proj, the v_proj output it reads (query head h reads key/value head
    h // (heads / kv heads)), and the head size."""
    from qtutor.model.activations import head_dim_of

    config = model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = head_dim_of(model)
    columns = np.arange(heads * head_dim)
    kv_head = (columns // head_dim) // (heads // kv_heads)
    return kv_head * head_dim + columns % head_dim, head_dim


def affine_model(model: Any, calib: Any, fmt: Any, group_size: Any, sym: Any, *, alpha: float = 0.5,
                 ln_matrix: bool = True, epochs: int = aq.EPOCHS, steps: int = aq.STEPS_PER_EPOCH,
                 lr: float = aq.LEARNING_RATE, sf: float = aq.STABILITY_FACTOR, layers: list[str] | None = None,
                 skip: tuple[str, ...] = (), progress: bool = True) -> AffineModel:
    """Learn and apply every group's A (see the module's docstring); returns the restorable handle."""
    from tqdm.auto import tqdm

    aq.check_options(alpha, epochs, sf)
    if calib is None:
        raise ValueError("AffineQuant needs calibration data: calib=qt.data.calibration(n_samples=32, seq_len=256)")
    wanted = {layer.name for layer in linear_layers(model) if layer.role not in skip
              and (layers is None or layer.name in layers)}
    norm_groups = [g for g in scaling_groups(model, linear_sources=False) if all(r in wanted for r in g.readers)]
    pairs = value_output_pairs(model, wanted)
    if not norm_groups and not pairs:
        raise ValueError("AffineQuant found no norm -> linear group and no v_proj -> o_proj pair among the layers "
                         "to quantize (it knows Llama-, OPT- and GPT-2-style blocks)")
    index, head_dim = head_index(model) if pairs else (None, None)
    stats = collect_statistics(model, calib, [g.readers[0] for g in norm_groups] + [name for pair in pairs
                                                                                     for name in pair])

    def round_weight(V: np.ndarray) -> np.ndarray:
        return fmt.encode(np.asarray(V, dtype=np.float32), group_size=group_size, sym=sym).dequantize()

    handle = AffineModel(model)
    weights = {name: get_weight(find_layer(model, name)).astype(np.float64) for name in wanted}
    by_block: dict[str, list] = {}
    for group in norm_groups:
        by_block.setdefault(group.block, []).append(("norm", group))
    for v, o in pairs:
        by_block.setdefault(v.rsplit(".self_attn", 1)[0], []).append(("vo", (v, o)))
    bar = tqdm(total=len(norm_groups) + len(pairs), desc="affinequant transforms", disable=not progress, leave=False)
    try:
        for block in by_block.values():
            input_transform: dict[str, np.ndarray] = {}  # v_proj -> the A its input got (learned before v -> o)
            for kind, group in sorted(block, key=lambda item: item[0] == "vo"):
                if kind == "norm":
                    _learn_norm_group(handle, group, stats, weights, round_weight, input_transform,
                                      alpha=alpha, ln_matrix=ln_matrix, epochs=epochs, steps=steps, lr=lr, sf=sf)
                else:
                    _learn_value_output(handle, group, stats, weights, round_weight, input_transform, index,
                                        head_dim, alpha=alpha, epochs=epochs, steps=steps, lr=lr, sf=sf)
                bar.update(1)
    except BaseException:
        handle.restore()
        raise
    finally:
        bar.close()
    return handle


def _learn_norm_group(handle: AffineModel, group: ScalingGroup, stats: dict, weights: dict, round_weight: Any,
                      input_transform: dict, *, alpha, ln_matrix, epochs, steps, lr, sf) -> None:
    entry = stats[group.readers[0]]
    readers = [weights[r] for r in group.readers]
    s = aq.initial_scales(entry["absmax"], [W.astype(np.float32) for W in readers], alpha)
    terms = [aq.Term(W, entry["H"], "in") for W in readers]
    learned = aq.learn_transform(terms, s, round_weight, epochs=epochs, steps=steps, lr=lr, sf=sf,
                                 diagonal_only=not ln_matrix, name=group.source)
    aq.warn_if_not_improved(learned, group.source)
    handle.learned[group.source] = learned
    A = learned.A
    if ln_matrix:
        handle.multiply_output(group.source, np.linalg.inv(A))
        for name, W in zip(group.readers, readers):
            handle.transform_weight(name, W @ A.T)
            weights[name] = W @ A.T
        sizes = [W.size for W in readers]
        handle.side_bits.update(zip(group.readers, aq.shares(aq.matrix_bits(A.shape[0]), sizes)))
        for name in group.readers:
            input_transform[name] = A
    else:
        handle.apply(group, np.diag(A).astype(np.float32))
        for name, W in zip(group.readers, readers):
            weights[name] = W * np.diag(A)[None, :]
            input_transform[name] = np.diag(np.diag(A))


def _learn_value_output(handle: AffineModel, pair: tuple[str, str], stats: dict, weights: dict, round_weight: Any,
                        input_transform: dict, index: np.ndarray, head_dim: int, *, alpha, epochs, steps, lr,
                        sf) -> None:
    v, o = pair
    W_v, W_o = weights[v], weights[o]
    H_o, absmax_o = stats[o]["H"], stats[o]["absmax"]
    d = W_v.shape[0]
    # the v term in the basis q, k, v's transform left: inputs x A^-1, so H becomes A^-1 H A^-T
    A_in = input_transform.get(v)
    H_v = stats[v]["H"]
    if A_in is not None:
        A_in_inv = np.linalg.inv(A_in)
        H_v = A_in_inv @ H_v @ A_in_inv.T
    # SmoothQuant's start in v's output space: each channel's largest input to o_proj and largest o_proj column
    act, column = np.zeros(d), np.zeros(d)
    np.maximum.at(act, index, absmax_o)
    np.maximum.at(column, index, np.abs(W_o).max(axis=0))
    s = aq.initial_scales(act, [np.broadcast_to(column.astype(np.float32), (1, d))], alpha)
    terms = [aq.Term(W_v, H_v, "out"), aq.Term(W_o, H_o, "in", index=index, block=head_dim)]
    learned = aq.learn_transform(terms, s, round_weight, epochs=epochs, steps=steps, lr=lr, sf=sf,
                                 block=head_dim, name=f"{v} -> {o}")
    aq.warn_if_not_improved(learned, f"{v} -> {o}")
    handle.learned[f"{v} -> {o}"] = learned
    A = learned.A
    W_v_new = aq.transformed(terms[0], A)
    W_o_new = aq.transformed(terms[1], terms[1].expand(A))
    handle.transform_weight(v, W_v_new)
    handle.transform_weight(o, W_o_new)
    weights[v], weights[o] = W_v_new, W_o_new
