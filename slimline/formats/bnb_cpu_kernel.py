"""Which Linear layers bitsandbytes' AVX-512 CPU kernel for 4-bit weights can run.

On a CPU with AVX-512 bf16 (bitsandbytes' `has_avx512bf16()`, e.g. AMD Zen 4/5), `Linear4bit.forward`
in eval mode repacks its weight for a fused kernel (`bitsandbytes.functional._convert_weight_packed_for_cpu`,
bitsandbytes 0.48-0.50): output channels in blocks of 32 and the absmax table reshaped to
(out, in // blocksize). A layer whose in_features is not a multiple of the quantization blocksize (64)
or whose out_features is not a multiple of 32 crashes at its first forward with
"RuntimeError: shape '[32, 0]' is invalid". On other CPUs the portable kernel takes any width.
So on such a CPU the 4-bit passes leave those layers in float (and say which), and loading a model
quantized elsewhere with such layers is refused with the fix, rather than crashing mid-benchmark.
"""

from __future__ import annotations

from typing import Any

#: Output-channel block of the packed AVX-512 layout (block_n in bitsandbytes).
PACKED_BLOCK_OUT = 32
#: bitsandbytes' default 4-bit quantization blocksize (transformers' BitsAndBytesConfig does not change it).
BNB_4BIT_BLOCKSIZE = 64


def packed_kernel_active(device: str) -> bool:
    """Whether bitsandbytes takes the packed AVX-512 path for 4-bit layers on `device` here."""
    if device != "cpu":
        return False
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def packed_kernel_accepts(out_features: int, in_features: int, blocksize: int = BNB_4BIT_BLOCKSIZE) -> bool:
    return out_features % PACKED_BLOCK_OUT == 0 and in_features % blocksize == 0 and in_features % 2 == 0


def linear_shapes(model: Any) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of every nn.Linear (and bitsandbytes Linear4bit) by module name."""
    import torch

    return {name: (module.out_features, module.in_features) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)}


def layers_the_kernel_rejects(model: Any, skipped: list[str]) -> list[str]:
    """Module names the packed kernel cannot run, among those not already skipped by name."""
    def is_skipped(name: str) -> bool:
        return any(name == s or name.endswith(f".{s}") or f".{s}." in f".{name}." for s in skipped)

    return sorted(name for name, (out_f, in_f) in linear_shapes(model).items()
                  if not is_skipped(name) and not packed_kernel_accepts(out_f, in_f))


def quantized_layers_the_kernel_rejects(model: Any) -> list[str]:
    """Already-quantized Linear4bit layers of a loaded model that the packed kernel cannot run."""
    return sorted(name for name, module in model.named_modules()
                  if type(module).__name__ == "Linear4bit"
                  and not packed_kernel_accepts(module.out_features, module.in_features))
