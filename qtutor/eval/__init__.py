"""Measuring quantization, one module each: ``perplexity`` (sliding window, with its standard error),
``divergence`` (KL and top-token agreement with the float model), ``layer_error`` (a layer's output error in
GPTQ's terms, GPTQ against RTN), ``footprint`` (memory arithmetic), ``sweep``
(quantize, measure, restore), ``generation`` (greedy text side by side, to watch a model break). The functions
most used are also ``qt.perplexity`` and ``qt.footprint``."""
