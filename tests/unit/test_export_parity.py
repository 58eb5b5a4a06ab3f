"""Export parity checks at least 64 examples for every kind of model (was 4 sentences and 3 random rows)."""

from __future__ import annotations

from pathlib import Path

from slimline import api
from slimline.exporters.parity import PARITY_EXAMPLES


def test_a_text_classifier_is_checked_on_64_examples_real_sentences_first(tiny_bert: Path, tmp_path: Path) -> None:
    parity = api.export(tiny_bert, out=tmp_path / "onnx").manifest.metadata["parity"]
    assert parity["examples"] >= PARITY_EXAMPLES == 64
    assert parity["compared_predictions"] >= 64
    assert "4 built-in sentences" in parity["examples_from"] and "synthetic" in parity["examples_from"]


def test_an_image_classifier_is_checked_on_64_images(tiny_vit: Path, tmp_path: Path) -> None:
    parity = api.export(tiny_vit, out=tmp_path / "onnx", task="image-classification").manifest.metadata["parity"]
    assert parity["examples"] >= 64 and parity["examples_from"] == f"{parity['examples']} synthetic inputs"
