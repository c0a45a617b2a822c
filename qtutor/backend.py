"""Where arrays live: NumPy on the CPU always, CuPy on a GPU when one answers.

Every algorithm in qtutor is written once against an *array namespace* ``xp`` (``numpy`` or ``cupy``),
found from its inputs with :func:`array_namespace`. NumPy is the reference; CuPy runs the same code on a
GPU, and the hot spots call raw CUDA kernels (:mod:`qtutor.kernels`) that are tested against the NumPy twin.

Torch tensors cross into NumPy/CuPy at the model boundary only, through DLPack: on a GPU that is zero copy
(the CuPy array and the torch tensor share memory); on the CPU ``torch.Tensor.numpy()`` shares memory too.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def _cupy() -> ModuleType | None:
    """CuPy if it imports *and* a CUDA device answers, else None (cached for the process)."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library missing at import time
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        cupy.zeros(1).sum().item()  # a device that is listed but broken fails here, not in the user's code
    except Exception:
        return None
    return cupy


def has_gpu() -> bool:
    """True when CuPy is importable and a CUDA device answers."""
    return _cupy() is not None


def gpu_name() -> str | None:
    """The CUDA device's name, or None without a GPU."""
    cupy = _cupy()
    if cupy is None:
        return None
    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def is_cupy(array: Any) -> bool:
    return type(array).__module__.startswith("cupy")


def array_namespace(*arrays: Any) -> ModuleType:
    """The module (``numpy`` or ``cupy``) that owns these arrays; NumPy for anything that is not CuPy.

    Mixing CuPy and NumPy arrays in one call is an error rather than a silent copy: a hidden transfer
    between host and device is the most common way a GPU path ends up slower than the CPU.
    """
    kinds = {is_cupy(a) for a in arrays if a is not None and not np.isscalar(a)}
    if kinds == {True}:
        return _cupy() or _raise_no_gpu()
    if kinds == {True, False}:
        raise TypeError(
            "arrays live on different devices (some NumPy, some CuPy); move them with "
            "qtutor.backend.to_host(...) or qtutor.backend.to_device(...) first"
        )
    return np


def _raise_no_gpu() -> ModuleType:
    raise RuntimeError("a CuPy array was passed but no CUDA device answers; install qtutor[gpu] on a GPU machine")


def xp_for(device: str = "cpu") -> ModuleType:
    """The namespace for a device name: ``"cpu"`` -> numpy, ``"gpu"``/``"cuda"`` -> cupy (error if absent)."""
    if device == "cpu":
        return np
    if device in ("gpu", "cuda"):
        cupy = _cupy()
        if cupy is None:
            raise RuntimeError(f"device={device!r} asked for, but no CUDA device answers (qt.has_gpu() is False)")
        return cupy
    raise ValueError(f"device={device!r}: use 'cpu' or 'gpu'")


def to_host(array: Any) -> np.ndarray:
    """A NumPy array with the same values (a copy from the GPU, no copy for NumPy input)."""
    if is_cupy(array):
        return array.get()
    if _is_torch(array):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def to_device(array: Any) -> Any:
    """A CuPy array on the current GPU with the same values."""
    cupy = _cupy()
    if cupy is None:
        raise RuntimeError("to_device needs a CUDA device and CuPy (pip install 'qtutor[gpu]')")
    if _is_torch(array):
        return from_torch(array.cuda())
    return cupy.asarray(array)


def _is_torch(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch")


def from_torch(tensor: Any) -> Any:
    """torch.Tensor -> NumPy (CPU tensor) or CuPy (CUDA tensor), sharing memory through DLPack.

    bfloat16 has no NumPy dtype, so bf16 tensors are widened to float32 first (a copy).
    """
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    if tensor.is_cuda:
        cupy = _cupy() or _raise_no_gpu()
        return cupy.from_dlpack(tensor)
    return tensor.numpy()


def to_torch(array: Any) -> Any:
    """NumPy or CuPy array -> torch.Tensor on the same device, sharing memory through DLPack."""
    import torch

    if is_cupy(array):
        return torch.from_dlpack(array)
    return torch.from_numpy(np.ascontiguousarray(array))


# ---- linear algebra on the array's own device --------------------------------------------------------------------
# On the CPU the Cholesky factorizations go through PyTorch's LAPACK (MKL, as the reference GPTQ's torch.linalg):
# NumPy's OpenBLAS potrf took 0.75-9 s for one 1536 x 1536 factor on 2 busy cores where MKL takes 0.2-0.4 s, and
# GPTQ factorizes twice per layer. On a GPU, CuPy's (cuSOLVER).
def cholesky(A: Any) -> Any:
    """The lower Cholesky factor of a symmetric positive definite A (LinAlgError if it is not)."""
    if array_namespace(A) is not np:
        return array_namespace(A).linalg.cholesky(A)
    import torch

    try:
        return torch.linalg.cholesky(torch.from_numpy(np.ascontiguousarray(A))).numpy()
    except torch.linalg.LinAlgError as error:
        raise np.linalg.LinAlgError(str(error)) from None


def cholesky_inverse(L: Any) -> Any:
    """(L L^T)^-1 = L^-T L^-1 from the lower Cholesky factor L: one triangular solve and one product.
    (torch.cholesky_inverse, LAPACK's potri, took 1.6 s for a 1536 x 1536 factor on 2 cores; this takes 0.3 s.)"""
    xp = array_namespace(L)
    if xp is np:
        import torch

        L = torch.from_numpy(np.ascontiguousarray(L))
        L_inverse = torch.linalg.solve_triangular(L, torch.eye(L.shape[0], dtype=L.dtype), upper=False)
        return (L_inverse.T @ L_inverse).numpy()
    from cupyx.scipy.linalg import solve_triangular

    L_inverse = solve_triangular(L, xp.eye(L.shape[0], dtype=L.dtype), lower=True)
    return L_inverse.T @ L_inverse
