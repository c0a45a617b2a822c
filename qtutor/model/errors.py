"""The error every model loader raises when the model asked for is not on this machine.

Its own file so that each loader (``loading`` for Hugging Face directories and ids, ``gguf_model`` for .gguf
files) can raise it without importing the other: ``loading`` hands .gguf names to ``gguf_model``.
"""
from __future__ import annotations


class ModelNotAvailableError(OSError):
    """The model asked for is not on this machine (and downloads are off)."""
