"""AWQ on a whole model: one scale per scaling group, searched on the output of the module around its readers.

The per-layer mathematics is in :mod:`qtutor.methods.awq` (arrays in, arrays out: ``scales_for``,
``search_scale``, ``search_clip``); this is the model's half, which records what flows into each block,
re-runs the attention and the MLP for every candidate alpha, and folds the winner into the model
(:mod:`qtutor.model.scaling`). ``qt.quantize_model(model, "awq", ...)`` runs it before the per-layer clip search.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from qtutor.formats import Format
from qtutor.methods.awq import ALPHA_GRID, search_scale
from qtutor.model import blockwise_calls, call_again, find_layer, get_weight, role_of, swapped_weights
from qtutor.model.scaling import ScaledModel, scaling_groups


def scale_model(model: Any, calib: Any, fmt: Format, group_size: int, sym: bool | None = None, *,
                alphas: Sequence[float] = ALPHA_GRID, duo_scaling: bool = False, skip: Sequence[str] = (),
                search_tokens: int | None = None, progress: bool = True) -> ScaledModel:
    """Search and fold AWQ's scales, block by block, as the reference does (``auto_scale_block``).

    In a Llama block there are four scaling groups (:mod:`qtutor.model.scaling`), each with its own s:

    ========================  ======================  =========================
    x comes from (absorbs 1/s) linears reading x (x s)  error measured on
    ========================  ======================  =========================
    input_layernorm           q_proj, k_proj, v_proj  the attention's output
    v_proj (rows)             o_proj                  o_proj's output
    post_attention_layernorm  gate_proj, up_proj      the MLP's output
    up_proj (rows)            down_proj               down_proj's output
    ========================  ======================  =========================

    For each group and each alpha on the grid, the readers get ``Q(W diag(s)) diag(s)^-1`` (everything else
    stays in float), the inspected module is called again on its recorded calibration inputs, and the alpha
    with the smallest mean squared output error wins. A block's four searches all see the float block; then
    their scales are folded in (the float model is unchanged) and the next block is recorded.

    ``search_tokens``: measure each alpha's loss on the first recorded calls that hold this many calibration
    tokens (mean|x| still comes from all of them). Not in the reference: a CPU trade, since re-running the
    attention and the MLP for 20 alphas is most of AWQ's time (None: every token, as the reference).
    Returns the :class:`~qtutor.model.scaling.ScaledModel` (``restore()`` undoes it; ``searches`` holds each
    group's alpha and loss curve)."""
    from tqdm.auto import tqdm

    if calib is None:
        raise ValueError("AWQ needs calibration data: calib=qt.data.calibration(n_samples=32, seq_len=256)")
    groups = [group for group in scaling_groups(model)
              if not any(role_of(reader) in skip for reader in group.readers)]
    if not groups:
        raise ValueError("no scaling group (a norm or linear followed by linears) found in the model")
    blocks: dict[str, list] = {}
    for group in groups:
        blocks.setdefault(group.block, []).append(group)
    named = dict(model.named_modules())
    scaled = ScaledModel(model)
    inspected_modules = {block: sorted({group.inspect for group in members}) for block, members in blocks.items()}
    bar = tqdm(total=len(blocks), desc="AWQ scale search", disable=not progress, leave=False)
    try:
        # each block's calls are recorded as the block runs on the outputs of the blocks before it (one forward
        # pass in all); folding a block's scales leaves its float outputs as they were
        for block, calls in blockwise_calls(model, calib, inspected_modules):
            members = blocks[block]
            found = []
            for group in members:
                if not calls[group.inspect]:
                    raise ValueError(f"no calibration activations reached {group.inspect}: give longer text")
                recorded = calls[group.inspect]
                inputs = [_first_tensor(args, kwargs) for args, kwargs, _ in recorded]
                X = np.concatenate([x.float().reshape(-1, x.shape[-1]).cpu().numpy() for x in inputs], axis=0)
                searched = _first_calls(recorded, inputs, search_tokens)

                def inspected(weights, _X, group=group, searched=searched):
                    with swapped_weights(model, dict(zip(group.readers, weights))):
                        return call_again(named[group.inspect], searched)

                weights = [get_weight(find_layer(model, reader)) for reader in group.readers]
                found.append((group, search_scale(X, weights, inspected, fmt, group_size, sym, alphas,
                                                     duo_scaling)))
            for group, result in found:
                scaled.apply(group, result["s"])
                scaled.searches[group.source] = result
            bar.update(1)
    except BaseException:
        scaled.restore()
        raise
    finally:
        bar.close()
    return scaled


def _first_calls(recorded: list, inputs: list, tokens: int | None) -> list:
    """The first recorded calls that hold at least ``tokens`` tokens (all of them when ``tokens`` is None)."""
    if tokens is None:
        return recorded
    kept, total = [], 0
    for call, x in zip(recorded, inputs):
        if total >= tokens:
            break
        kept.append(call)
        total += x.numel() // x.shape[-1]
    return kept


def _first_tensor(args: tuple, kwargs: dict) -> Any:
    """The input a module was called on: its first positional argument, or ``hidden_states=``."""
    return args[0] if args else kwargs["hidden_states"]
