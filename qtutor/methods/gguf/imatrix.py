"""llama.cpp's importance matrix: how much each input column of each weight matters, and its file.

For a linear layer y = W x the error of weight W_ij reaches the output multiplied by x_j, so the expected
squared output error of a rounding is about  sum_j E[x_j^2] (W_ij - W_hat_ij)^2. llama.cpp's ``llama-imatrix``
runs calibration text through the model and keeps, for every weight tensor, the mean of x_j^2 over the tokens
(the diagonal of GPTQ's Hessian, up to a factor 2); ``llama-quantize --imatrix`` then weights each block's
least-squares fit by it (``qtutor.formats.ggml``: Q4_0 ... Q5_1, the K-quants and the i-quants take it
byte-exactly).

    im = qt.model.imatrix.collect(model, calib)            # an ImportanceMatrix, keyed by GGUF tensor names
    im.save("smollm2.imatrix.gguf"); im = load("smollm2.imatrix.gguf")
    evaluate(model, tokenizer, "gguf", "Q3_K_M", imatrix=im)

The file is llama.cpp's current format, a GGUF with ``general.type = "imatrix"``, the keys ``imatrix.datasets``,
``imatrix.chunk_count`` and ``imatrix.chunk_size``, and two tensors per weight: ``<name>.in_sum2`` (float32, the
sum of x_j^2 over the tokens) and ``<name>.counts`` (float32, how many tokens went into the sum); the
importance is their ratio. Calibrate on text like the text the model will serve, and never on the evaluation
text: the quantized model then fits exactly what it is measured on (llama.cpp PR 4930).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ImportanceMatrix:
    """Per weight tensor (GGUF name): the sum of squared inputs per column and the number of tokens summed."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_size: int = 0
    chunk_count: int = 0

    def __getitem__(self, name: str) -> np.ndarray:
        """The importance of tensor ``name``'s input columns: mean x_j^2 (float32; 1 where no token was seen)."""
        if name not in self.sums:
            raise KeyError(f"the importance matrix has no entry {name!r} (it has {len(self.sums)}: "
                           f"{', '.join(sorted(self.sums)[:3])}, ...); was it computed for this model?")
        count = self.counts[name]
        return (self.sums[name] / count).astype(np.float32) if count else np.ones_like(self.sums[name], np.float32)

    def __contains__(self, name: str) -> bool:
        return name in self.sums

    def for_tensor(self, name: str, type_name: str) -> np.ndarray | None:
        """What quantizing tensor ``name`` to ``type_name`` takes: its importance, or None when the matrix does not
        cover the tensor or the type uses none."""
        from qtutor.formats.ggml import takes_imatrix

        return self[name] if name in self.sums and takes_imatrix(type_name) else None

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Every weight of ``shapes`` (GGUF name -> (rows, columns)) that the matrix covers has one entry per
        column; otherwise the matrix belongs to another model."""
        for name, values in self.sums.items():
            if name in shapes and len(values) != shapes[name][-1]:
                raise ValueError(f"the importance matrix's {name} has {len(values)} columns, the model's "
                                 f"{shapes[name][-1]}: it was computed for another model; compute it for this one "
                                 "(qt.model.imatrix.collect(model, calib))")
        if shapes and not any(name in self.sums for name in shapes):
            raise ValueError("the importance matrix names none of this model's tensors: it belongs to another model")

    def save(self, path: str | Path) -> Path:
        """Write llama.cpp's imatrix GGUF (what ``llama-imatrix -o`` writes and ``llama-quantize --imatrix``
        reads)."""
        import gguf

        path = Path(path)
        writer = gguf.GGUFWriter(str(path), arch="imatrix")
        writer.add_type("imatrix")
        writer.add_array("imatrix.datasets", list(self.datasets) or ["qtutor"])
        writer.add_uint32("imatrix.chunk_count", int(self.chunk_count))
        writer.add_uint32("imatrix.chunk_size", int(self.chunk_size))
        for name in sorted(self.sums):
            writer.add_tensor(f"{name}.in_sum2", self.sums[name].astype(np.float32).reshape(1, -1))
            writer.add_tensor(f"{name}.counts", np.array([[self.counts[name]]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def load(path: str | Path) -> ImportanceMatrix:
    """Read an imatrix GGUF (llama.cpp's format), checking that it is one and that its entries are valid."""
    from qtutor.methods.gguf.reader import read_gguf

    source = read_gguf(path)
    if source.metadata.get("general.type") != "imatrix":
        raise ValueError(f"{path} is a GGUF file but not an importance matrix (general.type = "
                         f"{source.metadata.get('general.type')!r}); pass the file llama-imatrix wrote")
    matrix = ImportanceMatrix(datasets=list(source.metadata.get("imatrix.datasets", [])),
                              chunk_size=int(source.metadata.get("imatrix.chunk_size", 0)),
                              chunk_count=int(source.metadata.get("imatrix.chunk_count", 0)))
    for tensor in source.tensors:
        if not tensor.endswith(".in_sum2"):
            continue
        name = tensor.removesuffix(".in_sum2")
        sums = source.dequantize(tensor).reshape(-1)
        if f"{name}.counts" not in source.tensors:
            raise ValueError(f"{path}: {tensor} has no {name}.counts beside it (a truncated or foreign file)")
        count = float(source.dequantize(f"{name}.counts").reshape(-1)[0])
        matrix.sums[name], matrix.counts[name] = check_values(sums, name), int(count)
    return matrix


def check_values(values: Any, name: str = "imatrix") -> np.ndarray:
    """Finite, non-negative float32 values (sums or means of squares), or a clear error."""
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{name}: importance values must be finite and >= 0 (sums of squared activations); "
                         "recompute the importance matrix from finite calibration inputs")
    return values
