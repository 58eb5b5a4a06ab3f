"""Model formats: opening checkpoints, loading Hugging Face models, model inputs, the torch-quantized
(torch int8 / bitsandbytes) format and TensorRT engine facts. Shared by compress, export and bench."""
