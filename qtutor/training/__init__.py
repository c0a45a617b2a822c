"""Training with quantization in the loop: QAT (:mod:`qtutor.training.qat`), and the loop itself
(:mod:`qtutor.training.loop`).

The post-training methods (:mod:`qtutor.methods`) round a trained model; these train it *through* the rounding.
They sit above :mod:`qtutor.model` (they swap a model's layers) and use the number formats below it.
"""
