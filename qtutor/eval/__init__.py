"""Measuring quantization, one module each: ``perplexity`` (sliding window), ``divergence`` (KL from the float
model), ``footprint`` (memory arithmetic), ``sweep`` (quantize, measure, restore). The functions most used are
also ``qt.perplexity`` and ``qt.footprint``."""
