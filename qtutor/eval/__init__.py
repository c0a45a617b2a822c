"""Measuring quantization: perplexity, layer output error, memory footprints."""
from qtutor.eval.footprint import footprint, kv_cache_bytes, ram_table

__all__ = ["footprint", "kv_cache_bytes", "perplexity", "ram_table"]


def __getattr__(name):
    if name == "perplexity":  # torch loads only when perplexity is wanted
        from qtutor.eval.perplexity import perplexity

        return perplexity
    raise AttributeError(name)
