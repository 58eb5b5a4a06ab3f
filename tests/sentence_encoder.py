"""A tiny sentence-embedding checkpoint laid out as sentence-transformers saves one: a bare encoder
(`architectures: [MPNetModel]`, so slimline reads the task feature-extraction), its tokenizer, and
`1_Pooling/config.json` naming the pooling. Built from a model_zoo encoder's config and tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from model_zoo import build

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_sentence_encoder(path: Path, family: str = "mpnet", pooling: str = "mean", seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    classifier = build(family, path.parent / f"{path.name}-classifier", seed=seed)
    config = AutoConfig.from_pretrained(classifier)
    config.architectures = None
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    AutoModel.from_config(config).eval().save_pretrained(path, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (classifier / name).is_file():
            shutil.copy2(classifier / name, path / name)
    shutil.rmtree(classifier)
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": pooling == "max"}))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return path
