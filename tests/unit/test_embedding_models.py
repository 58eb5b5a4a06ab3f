"""Embedding models (task feature-extraction): recognised from their checkpoint, pooled the way their sentence-
transformers config says, exported with their hidden states, scored by the cosine of their pooled vectors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS
from sentence_encoder import make_sentence_encoder

import slimline
from slimline.benchmarking.evaluators.base import EvalContext, evaluator_name_for, get_evaluator
from slimline.core.data import DatasetSpec, load_texts
from slimline.core.pooling import pool, pooling_of
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.inputs import default_input_specs


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sentence_encoder(tmp_path_factory.mktemp("encoder") / "model", family="bert")


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(2)
    path = tmp_path_factory.mktemp("texts") / "texts.csv"
    path.write_text("text\n" + "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
                                         for _ in range(30)) + "\n")
    return path


def test_mean_pooling_counts_real_tokens_only() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[2.0, 1.0]])
    np.testing.assert_allclose(pool(hidden, mask, "max"), [[3.0, 2.0]])
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[1.0, 0.0]])


@pytest.mark.parametrize(("written", "mode"), [({"pooling_mode_cls_token": True}, "cls"),
                                               ({"pooling_mode_max_tokens": True}, "max"),
                                               ({"pooling_mode_mean_tokens": True}, "mean"), ("{broken", "mean"),
                                               (None, "mean")])
def test_pooling_follows_the_sentence_transformers_config(written: object, mode: str, tmp_path: Path) -> None:
    if written is not None:
        (tmp_path / "1_Pooling").mkdir()
        text = written if isinstance(written, str) else json.dumps(written)
        (tmp_path / "1_Pooling" / "config.json").write_text(text)
    assert pooling_of(tmp_path) == mode


def test_texts_load_without_a_label_column(texts: Path) -> None:
    chosen, digest = load_texts(DatasetSpec(source=str(texts), split="train"))
    assert len(chosen) == 24 and all(isinstance(t, str) and t for t in chosen) and len(digest) == 64


def test_a_bare_encoder_is_an_embedding_model_that_exports_its_hidden_states(encoder: Path, tmp_path: Path) -> None:
    assert open_checkpoint(encoder).manifest.task == "feature-extraction"
    exported = slimline.export(encoder, out=tmp_path / "onnx")
    assert exported.manifest.outputs[0] == "last_hidden_state"
    assert exported.manifest.metadata["parity"]["max_abs_diff"] < 1e-3
    assert evaluator_name_for("feature-extraction", DatasetSpec(source=str(tmp_path / "t.csv"))) == "text-embedding"
    assert evaluator_name_for("text-classification", DatasetSpec(source=str(tmp_path / "t.csv"))) == \
        "text-classification"


def test_the_embedding_evaluator_scores_pooled_vectors_by_cosine(encoder: Path, texts: Path, tmp_path: Path) -> None:
    import torch

    from slimline.formats.hf import load_hf_model

    evaluator = get_evaluator("text-embedding")
    context = EvalContext(model=open_checkpoint(encoder), inputs=default_input_specs("feature-extraction"))
    npz = tmp_path / "eval.npz"
    facts = evaluator.prepare(DatasetSpec(source=str(texts), split="test"), context, npz)
    assert facts["examples"] == 3 and facts["pooling"] == "mean"
    model = load_hf_model(encoder, "feature-extraction")

    def forward(feeds: dict[str, np.ndarray], noise: float = 0.0) -> np.ndarray:
        with torch.no_grad():
            hidden = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        return hidden + noise * np.random.default_rng(0).standard_normal(hidden.shape).astype(np.float32)

    baseline = evaluator.score(forward, npz, 2, tmp_path / "base.npy")
    same = evaluator.score(forward, npz, 3, tmp_path / "same.npy")
    noisy = evaluator.score(lambda feeds: forward(feeds, noise=1.0), npz, 3, tmp_path / "noisy.npy")
    assert evaluator.compare(same, baseline, npz)["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
    damaged = evaluator.compare(noisy, baseline, npz)
    assert damaged["cosine_mean"] < 0.99 and damaged["cosine_p01"] <= damaged["cosine_mean"]
    assert damaged["max_abs_error"] > 0
