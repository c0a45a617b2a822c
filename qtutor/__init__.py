"""qtutor: learn LLM quantization by doing it."""
from qtutor.backend import has_gpu

__version__ = "0.1.0"
