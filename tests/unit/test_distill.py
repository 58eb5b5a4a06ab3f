"""distill.kd on tiny random BERTs: it learns from the teacher, saves a reloadable student, keeps to its budgets
and refuses data it must not train on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_bert
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from slimline.compression.base import ModelInfo, PassContext, PassResult
from slimline.compression.catalogue import registry
from slimline.compression.distill.kd import LOSS_CURVE_FILE, KDConfig, KnowledgeDistillation
from slimline.compression.distill.training import encode_training_set, uniform_layer_map
from slimline.compression.hf_save import save_reloadable
from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.errors import DataError, PassError, RecipeError
from slimline.formats.checkpoint import open_checkpoint
from slimline.profiles.schema import Target

CPU = Target(device="cpu", runtime="torch", threads=1)
FAST = {"batch_size": 8, "learning_rate": 3e-3, "warmup_fraction": 0.0, "device": "cpu", "log_every_steps": 2}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return open_checkpoint(make_tiny_bert(tmp_path_factory.mktemp("teacher") / "model", seed=0,
                                          initializer_range=0.2))


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    """Same tokenizer and classes as the teacher, different random weights."""
    return open_checkpoint(make_tiny_bert(tmp_path_factory.mktemp("student") / "model", seed=1,
                                          initializer_range=0.2))


def context(teacher: ModelDir | None, data: Path | None, seed: int = 0) -> PassContext:
    # The eval spec names the test split, as a run's does: the pass must switch to train.
    spec = DatasetSpec(source=str(data), split="test") if data is not None else None
    return PassContext(target=CPU, seed=seed, tuning_data=spec, teacher=teacher)


def distil(student: ModelDir, out: Path, ctx: PassContext, **options: object) -> PassResult:
    out.mkdir(parents=True)
    return KnowledgeDistillation(KDConfig(**{**FAST, **options})).apply(student, out, ctx)


def mean_kl(student_dir: Path, teacher_dir: Path, data: Path) -> float:
    """KL(teacher || student) at T=1 over the training split, the quantity distillation minimises."""
    encoded = encode_training_set(DatasetSpec(source=str(data), split="train"), student_dir, 64, with_labels=False)
    batch = encoded.batch(np.arange(len(encoded)), torch.device("cpu"))
    with torch.no_grad():
        mine = AutoModelForSequenceClassification.from_pretrained(student_dir).eval()(**batch).logits
        theirs = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()(**batch).logits
    return float(torch.nn.functional.kl_div(mine.log_softmax(-1), theirs.log_softmax(-1), log_target=True,
                                            reduction="batchmean"))


def test_registry_lists_distill_kd() -> None:
    assert registry()["distill.kd"] is KnowledgeDistillation


def test_distillation_lowers_kl_to_the_teacher(student: ModelDir, teacher: ModelDir, labelled_csv: Path,
                                               tmp_path: Path) -> None:
    result = distil(student, tmp_path / "out", context(teacher, labelled_csv), epochs=6, alpha_label=0.0)
    before = mean_kl(student.path, teacher.path, labelled_csv)
    after = mean_kl(tmp_path / "out", teacher.path, labelled_csv)
    assert after < 0.5 * before, (before, after)
    facts = result.metadata["distillation"]
    assert facts["stopped_by"] == "epochs" and facts["steps"] == 6 * 6  # 48 train rows / batch 8
    assert facts["loss_last"] < facts["loss_first"]
    assert facts["teacher"]["manifest_sha256"] == teacher.manifest_sha256
    assert facts["data"]["split"] == "train"
    assert set(result.data_sha256) == {"distillation"}


def test_layer_dropped_student_with_hidden_loss_saves_only_its_own_weights(teacher: ModelDir, labelled_csv: Path,
                                                                           tmp_path: Path) -> None:
    """A narrower, shallower student: hidden states are matched through projections that are not saved."""
    path = tmp_path / "narrow"
    path.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (teacher.path / name).is_file():
            shutil.copy(teacher.path / name, path / name)
    teacher_config = BertConfig.from_pretrained(teacher.path)
    narrow = teacher_config.to_dict() | {"hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 32}
    BertForSequenceClassification(BertConfig(**narrow)).save_pretrained(path, safe_serialization=True)
    result = distil(open_checkpoint(path), tmp_path / "out", context(teacher, labelled_csv), max_steps=4,
                    alpha_hidden=1.0)
    facts = result.metadata["distillation"]
    assert facts["hidden_projection"] and facts["layer_map"] == {"0": 1}
    curve = json.loads((tmp_path / "out" / LOSS_CURVE_FILE).read_text())
    assert all("hidden" in point for point in curve["points"])
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert set(saved) == set(BertForSequenceClassification.from_pretrained(path).state_dict())
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 1


def test_saved_student_reloads_from_safetensors_with_the_same_logits(student: ModelDir, tmp_path: Path) -> None:
    """A head-pruned, layer-dropped student: its config must describe both, or the reload differs."""
    model = AutoModelForSequenceClassification.from_pretrained(student.path).eval()
    model.prune_heads({1: [0]})
    model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[1]])
    model.config.num_hidden_layers = 1
    model.config.pruned_heads = {0: [0]}
    probe = {"input_ids": torch.arange(5, 21).reshape(2, 8), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    save_reloadable(model, tmp_path, "text-classification", probe)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, use_safetensors=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**probe).logits, model(**probe).logits)


def test_save_refuses_a_student_whose_config_does_not_describe_it(student: ModelDir, tmp_path: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(student.path).eval()
    model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[1]])  # num_hidden_layers left at 2
    probe = {"input_ids": torch.arange(5, 21).reshape(2, 8)}
    with pytest.raises(PassError, match="reloads with different outputs"):
        save_reloadable(model, tmp_path, "text-classification", probe)


def test_loss_curve_is_written_next_to_the_model(student: ModelDir, teacher: ModelDir, labelled_csv: Path,
                                                 tmp_path: Path) -> None:
    distil(student, tmp_path / "out", context(teacher, labelled_csv), max_steps=5)
    curve = json.loads((tmp_path / "out" / LOSS_CURVE_FILE).read_text())
    assert [point["step"] for point in curve["points"]] == [2, 4, 5]
    assert all({"elapsed_s", "learning_rate", "loss", "kd", "label"} <= set(point) for point in curve["points"])
    assert curve["points"][-1]["learning_rate"] == 0  # annealed by the end of the step budget
    assert (tmp_path / "out" / "vocab.txt").is_file()
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()


def test_max_steps_stops_training_and_is_recorded(student: ModelDir, teacher: ModelDir, labelled_csv: Path,
                                                  tmp_path: Path) -> None:
    facts = distil(student, tmp_path / "out", context(teacher, labelled_csv), max_steps=3).metadata["distillation"]
    assert (facts["steps"], facts["stopped_by"], facts["planned_steps"]) == (3, "max_steps", 3)


def test_time_budget_stops_training_and_is_recorded(student: ModelDir, teacher: ModelDir, labelled_csv: Path,
                                                    tmp_path: Path) -> None:
    facts = distil(student, tmp_path / "out", context(teacher, labelled_csv), epochs=1000,
                   time_budget_s=1.5).metadata["distillation"]
    assert facts["stopped_by"] == "time_budget_s"
    assert 0 < facts["steps"] < facts["planned_steps"]
    assert facts["seconds"] < 2.5  # no step starts that would end past the budget (slack for a loaded machine)


def test_same_seed_gives_the_same_student(student: ModelDir, teacher: ModelDir, labelled_csv: Path,
                                          tmp_path: Path) -> None:
    for name in ("a", "b"):
        distil(student, tmp_path / name, context(teacher, labelled_csv, seed=3), max_steps=3)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_configured_data_without_a_split_trains_on_the_train_split(labelled_csv: Path) -> None:
    assert KDConfig(data={"source": str(labelled_csv)}).data.split == "train"


@pytest.mark.parametrize("split", ["test", "all"])
def test_distillation_refuses_to_train_on_the_test_split(labelled_csv: Path, split: str) -> None:
    with pytest.raises(ValidationError, match="test split"):
        KDConfig(data={"source": str(labelled_csv), "split": split})
    with pytest.raises(RecipeError, match="test split"):
        parse_recipe([{"pass": "distill.kd", "with": {"data": {"source": str(labelled_csv), "split": split}}}], "t")


def test_distillation_refuses_empty_training_data(student: ModelDir, teacher: ModelDir, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="no examples"):
        distil(student, tmp_path / "out", context(teacher, empty))


def test_distillation_refuses_to_run_without_any_data(student: ModelDir, teacher: ModelDir, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no training examples") as caught:
        distil(student, tmp_path / "out", context(teacher, None))
    assert "--eval-data" in str(caught.value)


def test_distillation_refuses_to_run_without_a_teacher(student: ModelDir, labelled_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="no teacher"):
        distil(student, tmp_path / "out", context(None, labelled_csv))


def test_check_refuses_other_tasks_and_a_missing_teacher_directory(tmp_path: Path) -> None:
    kd = KnowledgeDistillation(KDConfig(teacher=str(tmp_path / "nowhere")))
    messages = [p.message for p in kd.check(ModelInfo("hf", "text-generation", "gpt2"), CPU)
                if p.severity == "error"]
    assert any("not text-generation models" in m for m in messages)
    assert any("not a model directory" in m for m in messages)
    assert any("accepts ['hf']" in p.message for p in kd.check(ModelInfo("onnx", "text-classification", "bert"), CPU))


def test_a_refused_task_is_the_only_reason_given_not_also_its_data(tmp_path: Path) -> None:
    """A causal LM's .txt corpus was also called "not texts" (a second, wrong error beside the task refusal);
    found by the coverage matrix."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the film was good\n")
    kd = KnowledgeDistillation(KDConfig(data={"source": str(corpus), "split": "train"}))
    errors = [p for p in kd.check(ModelInfo("hf", "text-generation", "llama"), CPU) if p.severity == "error"]
    assert len(errors) == 1 and "not text-generation models" in errors[0].message


def test_config_refuses_all_zero_loss_weights_and_a_stray_layer_map() -> None:
    with pytest.raises(ValidationError, match="nothing would be learned"):
        KDConfig(alpha_kd=0, alpha_label=0)
    with pytest.raises(ValidationError, match="alpha_hidden"):
        KDConfig(layer_map={0: 1})


def test_uniform_layer_map_spreads_student_layers_over_the_teacher() -> None:
    assert uniform_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert uniform_layer_map(4, 6) == {0: 1, 1: 2, 2: 4, 3: 5}
    assert uniform_layer_map(2, 2) == {0: 0, 1: 1}
