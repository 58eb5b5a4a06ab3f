"""The kinds of model in the coverage matrix (docs/coverage.md): how each one arrives, and its data.

Seventeen kinds, each a tiny seeded random-init model: the Hugging Face families of tests/model_zoo.py (nine text
classifiers, ViT, four decoder LLMs), two plain PyTorch modules given as factory + weights + input spec (the CNN of
tests/fixtures/tiny_cnn.py, the LSTM text classifier of tests/fixtures/tiny_lstm.py) and a model that arrives as an
ONNX file only (tests/streaming_model.py: a recurrent state whose batch axis is second, a scalar input). Each kind
comes with the data a user would bring: labelled texts, an image folder, an .npz of inputs or a text corpus, which
every command of the matrix reads (eval data, calibration, distillation).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO, WORDS
from model_zoo import build
from plain_modules import LSTM_SPEC


@dataclass(frozen=True)
class Kind:
    key: str  # the expectation's and the table's key
    label: str  # the table's row name
    arrives_as: str  # "hf", "module" (factory + weights + spec) or "onnx" (a file, nothing else)
    data: str  # which of the data below it is judged, calibrated and distilled on
    causal_lm: bool = False


@dataclass
class Source:
    """One kind as the commands take it."""

    model: Path  # what `export` and `compress` take: an HF checkpoint, a torch-module directory, an ONNX file
    run_args: dict[str, Any] = field(default_factory=dict)  # slimline.run's source: checkpoint=, or a factory
    data: Path | None = None


_TEXT = ("bert", "BERT"), ("distilbert", "DistilBERT"), ("roberta", "RoBERTa"), ("xlm-roberta", "XLM-R"), \
    ("deberta-v2", "DeBERTa-v2"), ("electra", "ELECTRA"), ("albert", "ALBERT"), ("mpnet", "MPNet"), \
    ("modernbert", "ModernBERT")
_LLMS = ("llama", "Llama"), ("qwen2", "Qwen2"), ("phi3", "Phi-3"), ("gemma", "Gemma")
KINDS: tuple[Kind, ...] = (
    *(Kind(key, label, "hf", "texts") for key, label in _TEXT),
    Kind("vit", "ViT", "hf", "images32"),
    Kind("cnn", "CNN (plain module)", "module", "images20"),
    Kind("lstm", "LSTM (plain module)", "module", "tokens"),
    Kind("onnx-only", "ONNX file only", "onnx", "chunks"),
    *(Kind(key, label, "hf", "corpus", causal_lm=True) for key, label in _LLMS),
)
BY_KEY = {kind.key: kind for kind in KINDS}


def _texts(path: Path, rows: int = 80) -> Path:
    rng = random.Random(0)
    lines = ["text,label"] + [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + ","
                              + rng.choice(["neg", "pos"]) for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _corpus(path: Path) -> Path:
    rng = random.Random(1)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(600)) + "\n")
    return path


def _tokens(path: Path, rows: int = 80) -> Path:
    import numpy as np

    np.savez(path, input_ids=np.random.default_rng(0).integers(0, 64, (rows, 16)).astype(np.int64))
    return path


def data_for(name: str, root: Path) -> Path:
    """The named data set under `root`, written on first use."""
    from plain_modules import write_image_folder
    from streaming_model import write_eval_chunks

    writers = {"texts": ("reviews.csv", _texts), "corpus": ("corpus.txt", _corpus),
               "tokens": ("tokens.npz", _tokens), "chunks": ("chunks.npz", write_eval_chunks),
               "images32": ("images32", lambda p: write_image_folder(p, per_class=20, size=32)),
               "images20": ("images20", lambda p: write_image_folder(p, per_class=20, size=20))}
    filename, write = writers[name]
    path = root / "data" / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    return path


def _plain_module(root: Path, factory: str, weights: Path, spec: Path) -> Source:
    """A factory + weights + spec as `run --model-factory` takes them, and the torch-module directory that `run`
    itself builds from them (slimline's own function), which `export` and `compress` take."""
    from slimline.pipeline.module_source import module_checkpoint

    module_dir = module_checkpoint(None, None, factory, weights, spec, None).path
    return Source(module_dir, {"model_factory": factory, "weights": weights, "inputs": spec})


def prepare(kind: Kind, root: Path) -> Source:
    """`kind`'s model under `root` (built on first use). Plain modules are imported from `root`, which must be the
    working directory (as a user's own module is imported from theirs)."""
    data = data_for(kind.data, root)
    workdir = root / "models" / kind.key
    if kind.arrives_as == "hf":
        if not (workdir / "config.json").is_file():
            build(kind.key, workdir)
        return Source(workdir, {"checkpoint": workdir}, data)
    if kind.arrives_as == "onnx":
        from streaming_model import write_streaming_onnx

        graph = workdir / "stream.onnx"
        if not graph.is_file():
            write_streaming_onnx(graph)
        return Source(graph, {"checkpoint": graph}, data)
    workdir.mkdir(parents=True, exist_ok=True)
    if kind.key == "cnn":
        from plain_modules import write_tiny_cnn

        weights = write_tiny_cnn(workdir)
        shutil.copy(workdir / "tiny_cnn.py", root / "tiny_cnn.py")
        source = _plain_module(root, "tiny_cnn:build", weights, workdir / "inputs.yaml")
    else:
        import torch

        shutil.copy(REPO / "tests" / "fixtures" / "tiny_lstm.py", root / "tiny_lstm.py")
        (workdir / "inputs.yaml").write_text(LSTM_SPEC)
        torch.manual_seed(0)
        from tiny_lstm import build as build_lstm  # copied into the working directory just above

        weights = workdir / "weights.pt"
        torch.save(build_lstm().state_dict(), weights)
        source = _plain_module(root, "tiny_lstm:build", weights, workdir / "inputs.yaml")
    source.data = data
    return source
