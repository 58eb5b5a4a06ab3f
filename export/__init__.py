"""Exporters: HF model directory -> deployable engine directory (ONNX now, TensorRT on GPUs)."""
