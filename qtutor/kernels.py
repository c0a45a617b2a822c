"""The CUDA kernels: where their sources are, how they are compiled, and which NumPy code each one mirrors.

Every ``.cu`` file in ``kernels/`` (shipped inside the wheel as ``qtutor/_cuda/``) holds the kernels of one
family. Each kernel is declared ``extern "C" __global__`` and is preceded by a line

    // twin: qtutor.formats.integer.IntegerFormat.quantize

naming the NumPy function it must agree with: bit-exact for integer outputs (codes, packed bytes), within a
stated tolerance for floating-point reductions. Tests compare each pair on a GPU; ``tests/test_kernels_meta.py``
checks on any machine that every kernel names a twin that exists.

Kernels are compiled with NVRTC through ``cupy.RawModule`` once per process and cached by source hash.
No ``--use_fast_math``: bit-exactness needs IEEE division and rounding (and ``__fmul_rn``-style intrinsics
where the NumPy twin does not fuse a multiply-add).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TWIN = re.compile(r"//\s*twin:\s*([\w.]+)\s*\n(?:\s*//.*\n)*\s*extern\s+\"C\"\s+__global__\s+void\s+(\w+)")
_KERNEL = re.compile(r"extern\s+\"C\"\s+__global__\s+void\s+(\w+)")

COMPILE_OPTIONS = ("-std=c++17",)


def source_dir() -> Path:
    """``qtutor/_cuda`` in an installed wheel, else ``kernels/`` beside the package in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_cuda", here.parent / "kernels"):
        if candidate.is_dir() and any(candidate.glob("*.cu")):
            return candidate
    raise FileNotFoundError(
        f"no CUDA sources found in {here / '_cuda'} or {here.parent / 'kernels'}; reinstall qtutor"
    )


def sources() -> dict[str, Path]:
    """Family name (file stem) -> path of its ``.cu`` file."""
    return {path.stem: path for path in sorted(source_dir().glob("*.cu"))}


@dataclass(frozen=True)
class KernelInfo:
    family: str  # the .cu file stem
    name: str  # the extern "C" symbol
    twin: str | None  # dotted path of the NumPy function it mirrors

    def resolve_twin(self):
        """Import and return the twin (raises if the dotted path does not name a real object)."""
        if not self.twin:
            raise LookupError(f"kernel {self.family}.{self.name} names no NumPy twin")
        parts = self.twin.split(".")
        for split in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
            return obj
        raise LookupError(f"cannot import the twin {self.twin!r} of kernel {self.family}.{self.name}")


def kernel_infos() -> list[KernelInfo]:
    """Every kernel in every family, with the NumPy twin its header comment names."""
    infos = []
    for family, path in sources().items():
        text = path.read_text()
        twins = {name: twin for twin, name in _TWIN.findall(text)}
        infos.extend(KernelInfo(family, name, twins.get(name)) for name in _KERNEL.findall(text))
    return infos


@functools.lru_cache(maxsize=None)
def _compiled(family: str, digest: str):
    import cupy

    code = sources()[family].read_text()
    return cupy.RawModule(code=code, options=COMPILE_OPTIONS, name_expressions=None)


def module(family: str):
    """The compiled ``cupy.RawModule`` of ``kernels/<family>.cu`` (compiled once, cached by source hash)."""
    from qtutor.backend import has_gpu

    if not has_gpu():
        raise RuntimeError(f"kernel family {family!r} needs a CUDA device and CuPy (qt.has_gpu() is False)")
    paths = sources()
    if family not in paths:
        raise KeyError(f"no kernels/{family}.cu; the families are: {', '.join(paths)}")
    digest = hashlib.sha256(paths[family].read_bytes()).hexdigest()
    return _compiled(family, digest)


def function(family: str, name: str):
    """One kernel, ready to launch: ``function("affine", "affine_quantize")((blocks,), (threads,), args)``."""
    return module(family).get_function(name)


THREADS = 256

# A null pointer for an optional array argument (``const float* zero`` with ``zero == nullptr`` meaning "none").
# Not None: CuPy passes None as the address 0xffffffff, which a kernel's nullptr test does not catch
# (cupy/cupy#9046). An 8-byte zero fills the pointer's slot.
NULL = np.uint64(0)


def optional(array):
    """A kernel argument that may be absent: the array itself, or a null pointer."""
    return NULL if array is None else array


def blocks_for(n: int, threads: int = THREADS, max_blocks: int = 65535) -> int:
    """Blocks for a grid-stride loop over ``n`` elements (kernels loop, so the grid can be capped)."""
    return max(1, min(max_blocks, -(-int(n) // threads)))
