"""Training with quantization in the loop: QAT with the STE and LSQ (:mod:`qtutor.training.qat`), LLM-QAT's
data-free distillation with a quantized KV cache (:mod:`qtutor.training.llm_qat`), QLoRA's adapters beside a
frozen NF4 base (:mod:`qtutor.training.qlora`), and the one loop they all use (:mod:`qtutor.training.loop`).

The post-training methods (:mod:`qtutor.methods`) round a trained model; these train it *through* the rounding.
They sit above :mod:`qtutor.model` (they swap a model's layers) and use the number formats below it.
"""
