"""Knowledge distillation: the pass's input model (a pruned or layer-dropped student) learns from a teacher.

Classifiers (text or image):
loss = alpha_kd * T^2 * KL(softmax(teacher/T) || softmax(student/T))
     + alpha_label * CE(student, labels)
     + alpha_hidden * MSE(projected student hidden states, matched teacher hidden states)
Embedding models (task feature-extraction, e.g. a sentence encoder):
loss = alpha_kd * (1 - cos(pooled student, pooled teacher)) [and/or MSE: `embedding_loss`]
     + alpha_hidden * MSE(hidden states, as above)
pooled as the checkpoint's sentence-transformers config says (mean over real tokens by default).

The teacher is the recipe's input checkpoint unless the config names another directory. Training
examples come from `data` (texts: rotten-tomatoes or a .csv/.jsonl; images: a folder or an .npz), or
from the run's evaluation source with the split forced to "train": the test split, where quality is
reported, is never trained on. Budgets are steps (`max_steps`, `epochs`); `time_budget_s` is a
wall-clock safety cap. Budgets (epochs, max_steps,
time_budget_s) stop it at whichever comes first and the manifest records which one did. The loss
curve is written next to the model as distill_loss.json. The output is a plain HF checkpoint
(safetensors), reloaded once after saving to prove its config still describes the student's shape.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from slimline.compression.base import ModelInfo, Pass, PassConfig, PassContext, PassResult, Problem, register
from slimline.compression.distill.data import OBJECTIVES, ImageSource, is_text_source, training_set
from slimline.compression.distill.training import (
    Distiller,
    TrainingOutcome,
    TrainingSet,
    freeze_embeddings,
    train,
    uniform_layer_map,
)
from slimline.compression.hf_save import carry_side_files, save_reloadable
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec, check_dataset_available, label_names_of
from slimline.core.errors import DataError, PassError
from slimline.core.pooling import pooling_of
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.hf import load_hf_model
from slimline.profiles.schema import Target

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
LOSS_CURVE_FILE = "distill_loss.json"
LOSS_CURVE_SCHEMA_VERSION = 1
VOCABULARY_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


class KDConfig(PassConfig):
    teacher: str | None = Field(default=None, description="teacher model directory; default: the recipe's input "
                                                          "checkpoint")
    data: DatasetSpec | ImageSource | None = Field(
        default=None, description="training examples: texts (rotten-tomatoes, .csv/.jsonl) or images (a folder, "
                                  ".npz); split train unless named, never test; default: the run's eval data, train")
    epochs: float = Field(default=3.0, gt=0, le=1000)
    max_steps: int | None = Field(default=None, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0, description="wall-clock limit from the pass's start: "
                                                                        "no step starts that would end past it")
    batch_size: int = Field(default=32, ge=1, le=4096)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    warmup_fraction: float = Field(default=0.06, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    temperature: float = Field(default=2.0, gt=0)
    alpha_kd: float = Field(default=1.0, ge=0)
    alpha_label: float = Field(default=0.5, ge=0)
    alpha_hidden: float = Field(default=0.0, ge=0)
    embedding_loss: Literal["cosine", "mse", "cosine+mse"] = Field(
        default="cosine", description="embedding models: distance between the pooled student and teacher vectors")
    layer_map: dict[int, int] | None = Field(default=None, description="student layer -> teacher layer for the "
                                                                       "hidden loss; default: spread uniformly")
    max_length: int | None = Field(default=None, ge=8, le=32768, description="tokens per text; default: the "
                                                                             "profile's sequence length")
    freeze_embeddings: bool = Field(default=True, description="no gradients for the embedding block (much faster "
                                                              "on CPU)")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when torch sees one")
    log_every_steps: int = Field(default=10, ge=1, description="steps averaged into one point of the loss curve")
    seed: int = 0

    @field_validator("data", mode="before")
    @classmethod
    def _train_split_by_default(cls, value: Any) -> Any:
        """A DatasetSpec defaults to the test split (it is made for evaluation); here an unnamed split is train."""
        if isinstance(value, dict) and "split" not in value:
            return {**value, "split": "train"}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KDConfig:
        if self.alpha_kd == 0 and self.alpha_label == 0 and self.alpha_hidden == 0:
            raise ValueError("alpha_kd, alpha_label and alpha_hidden are all 0: nothing would be learned")
        if self.data is not None and self.data.split in ("test", "all"):
            raise ValueError(f"data.split {self.data.split!r} contains the test split, where accuracy is reported; "
                             "train on 'train' (or 'validation')")
        if self.layer_map is not None:
            if self.alpha_hidden == 0:
                raise ValueError("layer_map only matters for the hidden-state loss; set alpha_hidden > 0")
            if not self.layer_map or any(k < 0 or v < 0 for k, v in self.layer_map.items()):
                raise ValueError("layer_map must map student layer indices to teacher layer indices (both >= 0)")
        return self


@register("distill.kd")
class KnowledgeDistillation(Pass[KDConfig]):
    Config = KDConfig
    stage = "torch"
    accepts = frozenset({"hf"})
    produces = "hf"
    needs = frozenset({"teacher"})

    def check(self, model: ModelInfo, target: Target) -> list[Problem]:
        config = self.config
        problems = super().check(model, target)
        if model.task not in OBJECTIVES:
            problems.append(self.error(f"distils classifiers (text or image: class logits) and embedding models "
                                       f"(feature-extraction: pooled vectors), not {model.task} models",
                                       fix="drop the step for this model (prune.layers without distillation, or "
                                           "quantization, still apply)"))
        if config.teacher is not None and not (Path(config.teacher).expanduser() / "config.json").is_file():
            problems.append(self.error(f"teacher {config.teacher} is not a model directory (no config.json)",
                                       fix="name a Hugging Face or slimline model directory, or leave teacher unset "
                                           "to learn from the recipe's input checkpoint"))
        if config.data is not None and model.task in OBJECTIVES:  # else no data would do: the refusal above says why
            problems += self._data_problems(model.task)
        return problems

    def _data_problems(self, task: str) -> list[Problem]:
        data = self.config.data
        assert data is not None
        wants_images = task == "image-classification"
        if wants_images != isinstance(data, ImageSource):
            kind, fix = (("images", "set data.source to an image folder (root/<class>/<image>) or an .npz")
                         if wants_images else ("texts", "set data.source to rotten-tomatoes or a .csv/.jsonl file"))
            return [self.error(f"a {task} model learns from {kind}; data.source {data.source} is not", fix=fix)]
        if isinstance(data, ImageSource):
            if not Path(data.source).expanduser().exists():
                return [self.error(f"training images {data.source} do not exist",
                                   fix="point data.source at an image folder or an .npz file")]
            return []
        try:
            check_dataset_available(data)
        except DataError as err:
            return [self.refusal(err)]
        return []

    def apply(self, model: ModelDir, out_dir: Path, context: PassContext) -> PassResult:
        import torch

        config = self.config
        started = time.perf_counter()
        teacher_dir = self._teacher(context, model)
        task = model.manifest.task
        objective = OBJECTIVES[task]
        spec = self._training_spec(context, task)
        max_length = config.max_length or context.shape.sequence_length
        data = training_set(task, spec, model.path, model.manifest.metadata, max_length,
                            with_labels=config.alpha_label > 0 and objective == "logits")
        pooling = pooling_of(teacher_dir.path)
        device = self._device()
        seed = context.seed + config.seed
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(context.target.threads)
        try:
            torch.manual_seed(seed)
            student = load_hf_model(model.path, model.manifest.task).to(device)
            teacher = load_hf_model(teacher_dir.path, teacher_dir.manifest.task).to(device)
            _check_compatible(student, teacher, model.path, teacher_dir.path, data, objective)
            student_layers, teacher_layers = _layers(student), _layers(teacher)
            layer_map = self._layer_map(student_layers, teacher_layers)
            frozen = freeze_embeddings(student) if config.freeze_embeddings else False
            distiller = Distiller(student, teacher, config, layer_map or {}, len(data), device, objective, pooling)
            outcome = train(distiller, data, np.random.default_rng(seed), started,
                            f"{self.name}: distilling into the student"
                            + (f" ({student_layers} layers)" if student_layers else ""))
            train_seconds = time.perf_counter() - started
            carry_side_files(model.path, out_dir, replaced=frozenset({LOSS_CURVE_FILE}))
            save_reloadable(student, out_dir, model.manifest.task, data.batch(np.arange(min(8, len(data))), device))
        finally:
            torch.set_num_threads(previous_threads)
        write_loss_curve(out_dir / LOSS_CURVE_FILE, outcome)
        summary = outcome.summary()
        metadata = {
            "config": config.model_dump(mode="json"),
            **summary,
            "seconds": round(train_seconds, 2),
            "seconds_per_step": round(train_seconds / outcome.steps, 4) if outcome.steps else None,
            "teacher": {"path": str(teacher_dir.path), "manifest_sha256": teacher_dir.manifest_sha256,
                        "layers": teacher_layers},
            "student_layers": student_layers, "embeddings_frozen": frozen,
            "layer_map": {str(k): v for k, v in layer_map.items()} if layer_map else None,
            "hidden_projection": bool(distiller.projections),
            "objective": objective, "pooling": pooling if objective == "embedding" else None,
            "data": {**spec.model_dump(), "examples": len(data),
                     "max_length": max_length if data.padding_side is not None else None},
            "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
            "seed": seed, "device": str(device), "threads": context.target.threads,
            "loss_curve": LOSS_CURVE_FILE,
        }
        return PassResult(model_file=MODEL_FILE, metadata={"distillation": metadata},
                          data_sha256={"distillation": data.sha256})

    def _teacher(self, context: PassContext, student: ModelDir) -> ModelDir:
        config = self.config
        if config.teacher is not None:
            teacher = open_checkpoint(config.teacher)
        elif context.teacher is not None:
            teacher = context.teacher
        else:
            raise PassError(f"{self.name}: no teacher to learn from.",
                            fix="name one with `teacher: DIR` in the step, or run the recipe with `slimline run` "
                                "or `slimline compress`, which use the input checkpoint as the teacher.")
        if teacher.manifest.format != "hf" or teacher.manifest.task != student.manifest.task:
            raise PassError(f"{self.name}: the teacher {teacher.path} is a {teacher.manifest.format} "
                            f"{teacher.manifest.task} model; the student needs a Hugging Face "
                            f"{student.manifest.task} teacher.",
                            fix="point teacher at the fp32 Hugging Face checkpoint the student was made from.")
        if teacher.manifest_sha256 == student.manifest_sha256:
            log.warning("%s: the teacher is the student itself (%s); distillation will change little",
                        self.name, teacher.path)
        return teacher

    def _training_spec(self, context: PassContext, task: str) -> DatasetSpec | ImageSource:
        """The configured data, else the run's eval data source with its split forced to train."""
        config = self.config
        if config.data is not None:
            return config.data
        run_data = context.tuning_data
        if run_data is None:
            example = "{source: images/}" if task == "image-classification" else "{source: rotten-tomatoes}"
            raise DataError(f"{self.name}: no training examples: the step names no `data` and the run has no eval "
                            "data.", fix=f"add `data: {example}` to the distill.kd step, or pass --eval-data.")
        if isinstance(run_data, DatasetSpec):
            return run_data.model_copy(update={"split": "train"})
        source = str(run_data.source)  # the run's image folder / .npz (bench's EvalSource)
        if is_text_source(source):
            return DatasetSpec(source=source, split="train", seed=run_data.seed)  # type: ignore[arg-type]
        return ImageSource(source=source, split="train", seed=run_data.seed)

    def _layer_map(self, student_layers: int | None, teacher_layers: int | None) -> dict[int, int] | None:
        config = self.config
        if config.alpha_hidden == 0:
            return None
        if not student_layers or not teacher_layers:
            raise PassError(f"{self.name}: the hidden-state loss matches transformer layers, and this model has none "
                            "(its config names no num_hidden_layers).", fix="set alpha_hidden: 0.")
        layer_map = config.layer_map or uniform_layer_map(student_layers, teacher_layers)
        bad = {k: v for k, v in layer_map.items() if k >= student_layers or v >= teacher_layers}
        if bad:
            raise PassError(f"{self.name}: layer_map entries {bad} are out of range: the student has "
                            f"{student_layers} layers and the teacher {teacher_layers}.",
                            fix="use 0-based layer indices, or drop layer_map for the uniform default "
                                f"{uniform_layer_map(student_layers, teacher_layers)}.")
        return layer_map

    def _device(self) -> Any:
        import torch

        config = self.config
        if config.device == "cuda" and not torch.cuda.is_available():
            raise PassError(f"{self.name}: device 'cuda' was asked for, but torch sees no CUDA device.",
                            fix="set device: cpu (or auto), or run on a machine with a CUDA build of torch.")
        use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        return torch.device("cuda" if use_cuda else "cpu")


def _layers(model: Any) -> int | None:
    """The number of transformer layers, or None for a network without them (a CNN)."""
    return getattr(model.config, "num_hidden_layers", None)


def _check_compatible(student: Any, teacher: Any, student_dir: Path, teacher_dir: Path,
                      data: TrainingSet, objective: str) -> None:
    """Teacher and student must read the same inputs (token ids) and mean the same by each output: the same
    classes by each logit, or the same embedding space (width)."""
    problems = []
    vocabulary = (getattr(student.config, "vocab_size", None), getattr(teacher.config, "vocab_size", None))
    if vocabulary[0] != vocabulary[1]:
        problems.append(f"vocabulary sizes differ ({vocabulary[0]} vs {vocabulary[1]})")
    for name in VOCABULARY_FILES:
        mine, theirs = student_dir / name, teacher_dir / name
        if mine.is_file() and theirs.is_file() and mine.read_bytes() != theirs.read_bytes():
            problems.append(f"their {name} files differ")
    if objective == "logits" and (label_names_of(student_dir) != label_names_of(teacher_dir)
                                  or student.config.num_labels != teacher.config.num_labels):
        problems.append(f"their classes differ ({label_names_of(student_dir)} vs {label_names_of(teacher_dir)})")
    if objective == "embedding" and student.config.hidden_size != teacher.config.hidden_size:
        problems.append(f"their embeddings differ in width ({student.config.hidden_size} vs "
                        f"{teacher.config.hidden_size}): a student must embed into the teacher's space")
    if problems:
        raise PassError(f"distill.kd: the teacher {teacher_dir} cannot teach the student {student_dir}: "
                        f"{'; '.join(problems)}.",
                        fix="distil from the checkpoint the student was pruned from (same tokenizer and labels).")
    if data.labels is not None and len(data.labels) and int(data.labels.max()) >= student.config.num_labels:
        raise DataError(f"the training labels go up to {int(data.labels.max())}, but the student has "
                        f"{student.config.num_labels} classes.", fix="use data labelled with the model's classes.")


def write_loss_curve(path: Path, outcome: TrainingOutcome) -> None:
    """One point per logged window (mean loss parts), so the curve can be plotted or read in a diff."""
    document = {"schema_version": LOSS_CURVE_SCHEMA_VERSION, **outcome.summary(), "points": outcome.curve}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
