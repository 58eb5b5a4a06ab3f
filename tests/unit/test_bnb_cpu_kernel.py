"""bitsandbytes 4-bit on both CPU kernels: the AVX-512 packed kernel (on CPUs with AVX-512 bf16) takes only
some widths, the portable kernel any. Each path is exercised where the machine can run it; the portable
one everywhere, by turning the packed path off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert

from slimline.compression.base import PassContext
from slimline.compression.recipe import parse_recipe
from slimline.core.errors import CheckpointError
from slimline.formats import bnb_cpu_kernel
from slimline.formats.bnb_cpu_kernel import packed_kernel_accepts
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.torch_quantized import load_torch_quantized
from slimline.profiles.schema import Target

pytest.importorskip("bitsandbytes")
pytest.importorskip("accelerate")

TORCH_CPU = Target(device="cpu", runtime="torch", threads=1)
NF4 = [{"pass": "quantize.bnb-nf4"}]


def _logits(model) -> torch.Tensor:
    ids = torch.randint(5, 30, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _quantize(checkpoint: Path, out: Path) -> dict:
    step = parse_recipe(NF4, "test")[0]
    result = step.pass_.apply(open_checkpoint(checkpoint), out, PassContext(target=TORCH_CPU))
    return result.metadata["quantization"]


def _layer_types(model) -> dict[str, str]:
    layer = model.bert.encoder.layer[0]
    return {"query": type(layer.attention.self.query).__name__, "ffn_in": type(layer.intermediate.dense).__name__,
            "ffn_out": type(layer.output.dense).__name__}


@pytest.mark.parametrize(("out_features", "in_features", "accepted"), [
    (32, 64, True), (64, 128, True), (32, 32, False), (2, 64, False), (48, 64, False), (32, 96, False)])
def test_the_packed_kernel_needs_blocks_of_32_outputs_and_64_inputs(out_features: int, in_features: int,
                                                                    accepted: bool) -> None:
    assert packed_kernel_accepts(out_features, in_features) is accepted


def test_4bit_on_this_cpu_keeps_only_the_widths_its_kernel_rejects_in_float(tiny_bert: Path, tmp_path: Path) -> None:
    """hidden 32 / FFN 64: Linear(32->32) and (32->64) have in_features 32, which the packed kernel cannot run."""
    info = _quantize(tiny_bert, tmp_path)
    model, _ = load_torch_quantized(tmp_path, "text-classification")
    types = _layer_types(model)
    assert types["ffn_out"] == "Linear4bit"  # 64 -> 32: fine on both kernels
    if bnb_cpu_kernel.packed_kernel_active("cpu"):
        assert types["query"] == types["ffn_in"] == "Linear"
        assert "bert.encoder.layer.0.attention.self.query" in info["kept_in_float_for_cpu_kernel"]
    else:
        assert types["query"] == types["ffn_in"] == "Linear4bit"
        assert "kept_in_float_for_cpu_kernel" not in info
    again, _ = load_torch_quantized(tmp_path, "text-classification")
    assert torch.equal(_logits(model), _logits(again))


def test_4bit_with_kernel_friendly_widths_quantizes_every_layer(tmp_path: Path) -> None:
    """hidden 64 / FFN 128 suit the packed kernel: on an AVX-512 CPU this runs it, elsewhere the portable one."""
    from transformers import BertConfig, BertForSequenceClassification

    checkpoint = make_tiny_bert(tmp_path / "wide", seed=1)  # its tokenizer; the weights are replaced
    torch.manual_seed(1)
    wide = BertConfig.from_pretrained(checkpoint, hidden_size=64, intermediate_size=128)
    BertForSequenceClassification(wide).eval().save_pretrained(checkpoint, safe_serialization=True)
    info = _quantize(checkpoint, tmp_path / "nf4")
    assert not info.get("kept_in_float_for_cpu_kernel")
    model, _ = load_torch_quantized(tmp_path / "nf4", "text-classification")
    assert set(_layer_types(model).values()) == {"Linear4bit"}
    again, _ = load_torch_quantized(tmp_path / "nf4", "text-classification")
    assert torch.equal(_logits(model), _logits(again))


def test_the_portable_path_quantizes_every_width(tiny_bert: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes.nn.modules

    monkeypatch.setattr(bnb_cpu_kernel, "packed_kernel_active", lambda device: False)
    monkeypatch.setattr("slimline.formats.torch_quantized.packed_kernel_active", lambda device: False)
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)
    _quantize(tiny_bert, tmp_path)
    model, _ = load_torch_quantized(tmp_path, "text-classification")
    assert set(_layer_types(model).values()) == {"Linear4bit"}
    again, _ = load_torch_quantized(tmp_path, "text-classification")
    assert torch.equal(_logits(model), _logits(again))


def test_a_4bit_model_from_another_cpu_is_refused_where_the_packed_kernel_cannot_run_it(
        tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes.nn.modules

    with monkeypatch.context() as portable:  # quantize as an AVX2 machine would: every width
        portable.setattr("slimline.formats.torch_quantized.packed_kernel_active", lambda device: False)
        portable.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)
        _quantize(tiny_bert, tmp_path)
    monkeypatch.setattr("slimline.formats.torch_quantized.packed_kernel_active", lambda device: True)
    with pytest.raises(CheckpointError, match="rerun the 4-bit pass on this machine"):
        load_torch_quantized(tmp_path, "text-classification")
