"""The course's models: the embedded tiny Llama (``tiny/``, trained by ``train.py``) and what was measured on them.

Each model card (``MODEL_CARD.md``, ``MODEL_CARD_SMOLLM2.md``) is written by a script from its measurements; the
SmolLM2 card's measurements are kept as data too, so that a notebook can draw the whole table instantly and
re-measure a few of its points live to show they still hold.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEASUREMENTS = {"smollm2": HERE / "smollm2_measurements.json"}
LAYER_ERRORS = {"smollm2": HERE / "smollm2_layer_errors.json"}
IQUANTS = {"smollm2": HERE / "smollm2_iquants.json"}
TRAINING = {"smollm2": HERE / "smollm2_training.json"}
BELOW_3_BITS = {"smollm2": HERE / "smollm2_below_3_bits.json"}
BELOW_3_BITS_WHOLE_MODEL = {"smollm2": HERE / "smollm2_below_3_bits_whole_model.json"}
FP_FORMATS = {"smollm2": HERE / "smollm2_fp_formats.json"}


def _stored(files: dict[str, Path], model: str, what: str, tool: str) -> dict:
    """The JSON of ``files[model]``, with errors that name the known models or the script that writes it."""
    if model not in files:
        raise ValueError(f"no stored {what} for model {model!r}; known: {', '.join(files)}")
    path = files[model]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python {tool}` to measure it")
    return json.loads(path.read_text())


def measurements(model: str = "smollm2") -> dict:
    """The figures behind a model's card (written by ``python tools/model_card_smollm2.py``): the float model's
    perplexity, and one row per variant (RTN per format, GPTQ and AWQ, GGUF mixes, LLM.int8()) with its
    perplexity ± standard error, change from float ± paired standard error, KL and same-top-token rate, all on
    the same test tokens."""
    return _stored(MEASUREMENTS, model, "measurements", "tools/model_card_smollm2.py")


def layer_errors(model: str = "smollm2") -> dict:
    """Every linear layer's relative output error under RTN, GPTQ and AWQ at INT4 and INT3 in groups of 64, each
    layer quantized on its own and measured on held-out inputs (written by ``python tools/layer_errors_smollm2.py``;
    ``errors[setting][method][layer]``)."""
    return _stored(LAYER_ERRORS, model, "layer errors", "tools/layer_errors_smollm2.py")


def iquants(model: str = "smollm2") -> dict:
    """llama.cpp's i-quant, ternary and low K-quant mixes on a model (written by ``python tools/iquants_smollm2.py``):
    ``imatrix_study``, Q2_K / Q3_K_M / IQ3_XXS / IQ2_XS without an importance matrix (a uniform one for the
    i-quants, which llama.cpp refuses without) and with one from the wiki train split, the news text and the
    evaluated text itself; ``mixes``, every mix with the wiki matrix. Each row: bits per weight, perplexity
    ± standard error, change from float ± paired standard error, KL and same-top-token rate."""
    return _stored(IQUANTS, model, "i-quant measurements", "tools/iquants_smollm2.py")


def fp_formats(model: str = "smollm2") -> dict:
    """The low-precision float formats on a model (written by ``python tools/fp_formats_smollm2.py``): ``w8a8``,
    weights per output channel and activations per token in INT8 (without and with SmoothQuant) or FP8 E4M3
    (per-channel or per-tensor weights), and W8A16-FP8; ``blocks``, MXFP4 and NVFP4 weights with RTN, GPTQ and
    MR-GPTQ, and W4A4 with RTN. Each row: bits per weight, perplexity ± standard error, change from float
    ± paired standard error, KL and same-top-token rate, on the model card's test tokens."""
    return _stored(FP_FORMATS, model, "float-format measurements", "tools/fp_formats_smollm2.py")


def training(model: str = "smollm2") -> dict:
    """Short training runs through the rounding (written by ``python tools/training_smollm2.py --part P``, one
    key per part): ``qat`` (LSQ at INT3 and INT2 g64 from RTN, with RTN's row, checkpoints of perplexity and a
    histogram of one layer's weights in units of their step), ``llm_qat`` (W4-A8-KV4: no training, data-free
    distillation, distillation on real text, the cache quantized only after training) and ``qlora`` (adapters on
    the NF4 base and on the float base, fine-tuned on news and scored on held-out news). Each part states its
    command, time and machine."""
    return _stored(TRAINING, model, "training runs", "tools/training_smollm2.py --part qat (and llm_qat, qlora)")


def below_3_bits(model: str = "smollm2", whole_model: bool = False) -> dict:
    """Every method of notebook 12 at ~2, ~3 and ~4 bits per weight on the same slice of a model (written by
    ``python benchmarks/below_3_bits.py``; by default every linear of blocks 0, 10, 20 and 29, the other blocks
    float): ``float`` and ``rows``, each with its band, bits per weight over the quantized layers, perplexity
    ± standard error, change from float ± paired standard error, KL, same-top-token rate and quantization
    seconds, and the command, machine and date that measured it; ``skipped``, the rows not run and why.

    ``whole_model=True``: the rows measured with every linear layer quantized (``--blocks all``: every row but
    AffineQuant's, written to ``smollm2_below_3_bits_whole_model.json``), in the same layout."""
    if whole_model:
        return _stored(BELOW_3_BITS_WHOLE_MODEL, model, "whole-model below-3-bits measurements",
                       "benchmarks/below_3_bits.py --blocks all --json " + str(BELOW_3_BITS_WHOLE_MODEL.get(model)))
    return _stored(BELOW_3_BITS, model, "below-3-bits measurements", "benchmarks/below_3_bits.py")


__all__ = ["below_3_bits", "fp_formats", "iquants", "layer_errors", "measurements", "training"]
