"""distill.kd beyond text classifiers: image classifiers (a tiny ViT and a tiny CNN) learn their teacher's logits on
the user's images, embedding models learn their teacher's pooled vectors on the user's texts (no labels needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_zoo import build
from plain_modules import write_image_folder
from sentence_encoder import make_sentence_encoder

from slimline.benchmarking.evaluators.base import EvalSource
from slimline.compression.base import ModelInfo, PassContext, PassResult
from slimline.compression.distill.data import ImageSource, image_training_set, unlabelled_text_set
from slimline.compression.distill.kd import LOSS_CURVE_FILE, KDConfig, KnowledgeDistillation
from slimline.core.data import DatasetSpec
from slimline.core.errors import DataError
from slimline.core.pooling import pool
from slimline.core.quality import vector_metrics
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

CPU = Target(device="cpu", runtime="torch", threads=1)
#: Budgets in steps (max_steps), so epochs are set out of the way.
FAST = {"epochs": 1000, "batch_size": 8, "learning_rate": 3e-3, "warmup_fraction": 0.0, "device": "cpu",
        "log_every_steps": 2}


def distil(student: Path, out: Path, teacher: Path, run_data: object = None, **options: object) -> PassResult:
    """distill.kd as a run applies it: the teacher is the run's checkpoint, `run_data` its --eval-data."""
    out.mkdir(parents=True)
    context = PassContext(target=CPU, teacher=open_checkpoint(teacher), tuning_data=run_data)  # type: ignore[arg-type]
    return KnowledgeDistillation(KDConfig(**{**FAST, **options})).apply(open_checkpoint(student), out, context)


def make_resnet(path: Path, seed: int) -> Path:
    """A two-stage ResNet (a CNN) for 32x32 images, with the preprocessing its processor config names."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=3)
    ResNetForImageClassification(config).eval().save_pretrained(path, safe_serialization=True)
    (path / "preprocessor_config.json").write_text(json.dumps({"do_resize": True, "size": {"height": 32, "width": 32},
                                                               "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("images") / "images", per_class=12, size=32)


def image_kl(student: Path, teacher: Path, images: Path) -> float:
    data = image_training_set(ImageSource(source=str(images)), teacher, {}, with_labels=False)
    batch = data.batch(np.arange(len(data)), torch.device("cpu"))
    with torch.no_grad():
        mine = load_hf_model(student, "image-classification")(**batch).logits
        theirs = load_hf_model(teacher, "image-classification")(**batch).logits
    return float(torch.nn.functional.kl_div(mine.log_softmax(-1), theirs.log_softmax(-1), log_target=True,
                                            reduction="batchmean"))


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_an_image_classifier_learns_its_teachers_logits_on_an_image_folder(kind: str, images: Path,
                                                                           tmp_path: Path) -> None:
    if kind == "vit":
        teacher, student = build("vit", tmp_path / "teacher", seed=0), build("vit", tmp_path / "student", seed=1)
    else:
        teacher, student = make_resnet(tmp_path / "teacher", 0), make_resnet(tmp_path / "student", 1)
    before = image_kl(student, teacher, images)
    run_eval_data = EvalSource(source=str(images), split="test")  # what `run --eval-data images:test` passes
    result = distil(student, tmp_path / "out", teacher, run_eval_data, max_steps=40, alpha_label=0.0)
    after = image_kl(tmp_path / "out", teacher, images)
    assert after < 0.5 * before, (before, after)
    facts = result.metadata["distillation"]
    assert facts["objective"] == "logits" and facts["data"]["split"] == "train" and facts["steps"] == 40
    assert facts["data"]["examples"] == 29 and facts["data"]["max_length"] is None  # 80% of 36 images
    curve = json.loads((tmp_path / "out" / LOSS_CURVE_FILE).read_text())
    assert curve["points"][-1]["step"] == 40 and curve["loss_last"] < curve["loss_first"]


def test_image_distillation_reads_an_npz_with_labels_for_the_label_loss(tmp_path: Path) -> None:
    teacher, student = build("vit", tmp_path / "teacher", seed=0), build("vit", tmp_path / "student", seed=1)
    rng = np.random.default_rng(0)
    npz = tmp_path / "images.npz"
    np.savez(npz, images=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), labels=rng.integers(0, 3, 20))
    result = distil(student, tmp_path / "out", teacher, max_steps=4, alpha_label=0.5,
                    data={"source": str(npz)})
    facts = result.metadata["distillation"]
    assert facts["data"]["source"] == str(npz) and facts["steps"] == 4
    assert "label" in json.loads((tmp_path / "out" / LOSS_CURVE_FILE).read_text())["points"][0]
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="alpha_label: 0"):
        distil(student, tmp_path / "refused", teacher, max_steps=2, alpha_label=0.5,
               data={"source": str(unlabelled)})


def embedding_cosine(student: Path, teacher: Path, texts: Path) -> float:
    data = unlabelled_text_set(DatasetSpec(source=str(texts), split="train"), teacher, 32)
    batch = data.batch(np.arange(len(data)), torch.device("cpu"))
    with torch.no_grad():
        mine = load_hf_model(student, "feature-extraction")(**batch).last_hidden_state.numpy()
        theirs = load_hf_model(teacher, "feature-extraction")(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()
    return vector_metrics(pool(mine, mask, "mean"), pool(theirs, mask, "mean"))["cosine_mean"]


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unlabelled texts: a CSV with a text column only."""
    import random

    from conftest import WORDS

    rng = random.Random(1)
    path = tmp_path_factory.mktemp("texts") / "texts.csv"
    path.write_text("text\n" + "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
                                         for _ in range(60)) + "\n")
    return path


def test_an_embedding_model_learns_its_teachers_pooled_vectors_on_unlabelled_texts(texts: Path,
                                                                                    tmp_path: Path) -> None:
    teacher = make_sentence_encoder(tmp_path / "teacher", seed=0)
    student = make_sentence_encoder(tmp_path / "student", seed=1)
    assert open_checkpoint(teacher).manifest.task == "feature-extraction"
    before = embedding_cosine(student, teacher, texts)
    result = distil(student, tmp_path / "out", teacher, DatasetSpec(source=str(texts), split="test"), max_steps=40,
                    embedding_loss="cosine+mse")
    after = embedding_cosine(tmp_path / "out", teacher, texts)
    assert after > before + 0.5 and after > 0.8, (before, after)
    facts = result.metadata["distillation"]
    assert facts["objective"] == "embedding" and facts["pooling"] == "mean" and facts["data"]["split"] == "train"
    point = json.loads((tmp_path / "out" / LOSS_CURVE_FILE).read_text())["points"][0]
    assert {"cosine", "mse", "loss"} <= set(point) and "label" not in point
    reloaded = load_hf_model(tmp_path / "out", "feature-extraction")  # a plain encoder checkpoint again
    assert type(reloaded).__name__ == "MPNetModel"


def test_embedding_distillation_pools_as_the_checkpoint_says(texts: Path, tmp_path: Path) -> None:
    teacher = make_sentence_encoder(tmp_path / "teacher", pooling="cls", seed=0)
    result = distil(teacher, tmp_path / "out", teacher, DatasetSpec(source=str(texts), split="test"), max_steps=2)
    assert result.metadata["distillation"]["pooling"] == "cls"


def test_check_refuses_data_of_the_wrong_kind_before_any_work(images: Path, texts: Path) -> None:
    def errors(task: str, data: dict) -> list[str]:
        kd = KnowledgeDistillation(KDConfig(data=data))
        return [p.message for p in kd.check(ModelInfo("hf", task, None), CPU) if p.severity == "error"]

    assert any("learns from images" in m for m in errors("image-classification", {"source": str(texts)}))
    assert any("learns from texts" in m for m in errors("feature-extraction", {"source": str(images)}))
    assert any("do not exist" in m for m in errors("image-classification", {"source": "/nowhere/images"}))
    assert not errors("image-classification", {"source": str(images)})
    assert not errors("feature-extraction", {"source": str(texts)})
    assert isinstance(KDConfig(data={"source": str(images)}).data, ImageSource)


def test_a_teacher_of_another_width_cannot_teach_an_embedding_student(texts: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModel

    from slimline.core.errors import PassError

    teacher = make_sentence_encoder(tmp_path / "teacher", seed=0)
    student = make_sentence_encoder(tmp_path / "student", seed=1)
    wider = AutoConfig.from_pretrained(student)
    wider.hidden_size, wider.intermediate_size = 48, 96
    AutoModel.from_config(wider).save_pretrained(student, safe_serialization=True)
    with pytest.raises(PassError, match="embed into the teacher's space"):
        distil(student, tmp_path / "out", teacher, DatasetSpec(source=str(texts), split="test"), max_steps=1)
