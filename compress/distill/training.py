"""The distillation training loop, kept apart from the pass so kd.py reads as config -> steps -> files.

What makes it fast enough on two CPU cores: batches of similar-length examples with the padding cut
off (the demo's snippets average 27 tokens; padding every batch to 128 would cost ~4x), frozen
embeddings (no gradient or AdamW update for the 30k x 384 word table), and the teacher's logits
cached per example, so when no hidden-state loss is asked for the teacher runs only in the first
epoch. torch is imported lazily: the registry imports every pass module to discover passes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slimline.core.data import DatasetSpec, length_buckets, tokenize_split
from slimline.core.progress import reporter

if TYPE_CHECKING:
    import torch

    from slimline.compression.distill.kd import KDConfig

log = logging.getLogger(__name__)

StopReason = Literal["epochs", "max_steps", "time_budget_s"]
LOSS_PARTS = ("loss", "kd", "cosine", "mse", "label", "hidden")
SUMMARY_STEPS = 20  # first/last loss in the metadata: mean over this many steps, like the demo's record


@dataclass(frozen=True)
class TrainingSet:
    """Model-ready examples: tokenised texts padded to the longest (each batch cuts its own padding off
    again), or preprocessed images (`padding_side` None: nothing to cut)."""

    arrays: dict[str, np.ndarray]
    lengths: np.ndarray
    labels: np.ndarray | None  # class ids in the student's id2label order; None when no label loss is asked
    sha256: str
    padding_side: str | None

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        import torch

        if self.padding_side is None:
            return {name: torch.from_numpy(values[rows]).to(device) for name, values in self.arrays.items()}
        width = max(int(self.lengths[rows].max()), 1)
        columns = slice(None, width) if self.padding_side == "right" else slice(-width, None)
        return {name: torch.from_numpy(values[rows][:, columns]).to(device) for name, values in self.arrays.items()}


def encode_training_set(spec: DatasetSpec, tokenizer_dir: Path, max_length: int, with_labels: bool) -> TrainingSet:
    """Tokenise a split with the student's tokenizer.

    Labels are mapped to the student's class names only when the label loss uses them, so a
    teacher-only distillation can run on texts whose label column means something else.
    """
    arrays, data, tokenizer = tokenize_split(spec, tokenizer_dir, max_length, map_labels=with_labels)
    width = arrays["input_ids"].shape[1]
    lengths = arrays["attention_mask"].sum(axis=1) if "attention_mask" in arrays else np.full(len(data), width)
    return TrainingSet(arrays, lengths, data.labels if with_labels else None, data.sha256, tokenizer.padding_side)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer i learns from teacher layer round((i+1)*Lt/Ls)-1: spread evenly, top matched to top.

    Rounds half up (not Python's half-to-even) so the map does not depend on parity: 4 of 6 gives
    {0: 1, 1: 2, 2: 4, 3: 5}.
    """
    return {i: math.floor((i + 1) * teacher_layers / student_layers + 0.5) - 1 for i in range(student_layers)}


def freeze_embeddings(model: Any) -> bool:
    """Freeze the whole embedding block (word, position, type, norm) where the model has one; False if none (a CNN)."""
    import torch

    embeddings = getattr(model.base_model, "embeddings", None)
    try:
        module = embeddings if isinstance(embeddings, torch.nn.Module) else model.get_input_embeddings()
    except NotImplementedError:
        module = None
    if module is None:
        return False
    for parameter in module.parameters():
        parameter.requires_grad = False
    return True


class Distiller:
    """Student, teacher and the training-only projections: computes the loss of one batch.

    `objective` "logits": KL between the temperature-softened class distributions (text or image
    classifiers); "embedding": cosine distance and/or MSE between the pooled embeddings (`pooling` as the
    checkpoint's sentence-transformers config says, mean by default). The teacher's targets are cached
    per example, so without a hidden-state loss the teacher runs only in the first epoch.
    """

    def __init__(self, student: Any, teacher: Any, config: KDConfig, layer_map: dict[int, int],
                 examples: int, device: torch.device, objective: str = "logits", pooling: str = "mean") -> None:
        import torch

        self.student, self.teacher, self.config, self.layer_map = student, teacher, config, layer_map
        self.objective, self.pooling = objective, pooling
        self.use_hidden = config.alpha_hidden > 0
        student_width = getattr(student.config, "hidden_size", None)
        teacher_width = getattr(teacher.config, "hidden_size", None)
        # A linear map from student to teacher width per matched layer; it lives only here, so the
        # saved student has exactly the architecture its config describes.
        self.projections = torch.nn.ModuleDict()
        if self.use_hidden and student_width != teacher_width:
            for layer in layer_map:
                self.projections[str(layer)] = torch.nn.Linear(student_width, teacher_width).to(device)
        width = teacher.config.num_labels if objective == "logits" else teacher_width
        self.teacher_logits = torch.zeros(examples, width, device=device)  # logits, or pooled embeddings
        self.known = np.zeros(examples, dtype=bool)
        self.device = device

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.student.parameters() if p.requires_grad] + list(self.projections.parameters())

    def _teacher(self, batch: dict[str, torch.Tensor], rows: np.ndarray) -> tuple[torch.Tensor, Any]:
        import torch

        index = torch.from_numpy(rows).to(self.device)
        if not self.use_hidden and self.known[rows].all():
            return self.teacher_logits[index], None
        with torch.no_grad():  # not inference_mode: kl_div saves its target for backward
            output = self.teacher(**batch, output_hidden_states=self.use_hidden)
            target = output.logits if self.objective == "logits" else \
                pool_torch(output.last_hidden_state, batch.get("attention_mask"), self.pooling)
        self.teacher_logits[index] = target
        self.known[rows] = True
        return target, output.hidden_states

    def loss(self, batch: dict[str, torch.Tensor], rows: np.ndarray,
             labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        import torch.nn.functional as F

        config = self.config
        teacher_target, teacher_hidden = self._teacher(batch, rows)
        output = self.student(**batch, output_hidden_states=self.use_hidden)
        if self.objective == "embedding":
            total, parts = self._embedding_loss(output.last_hidden_state, teacher_target, batch.get("attention_mask"))
        else:
            scale = config.temperature
            kd = F.kl_div(F.log_softmax(output.logits / scale, dim=-1),
                          F.log_softmax(teacher_target / scale, dim=-1), log_target=True,
                          reduction="batchmean") * scale**2
            total = config.alpha_kd * kd
            parts = {"kd": float(kd.detach())}
        if labels is not None and config.alpha_label > 0 and self.objective == "logits":
            label = F.cross_entropy(output.logits, labels)
            total = total + config.alpha_label * label
            parts["label"] = float(label.detach())
        if self.use_hidden:
            hidden = self._hidden_mse(output.hidden_states, teacher_hidden, batch.get("attention_mask"))
            total = total + config.alpha_hidden * hidden
            parts["hidden"] = float(hidden.detach())
        parts["loss"] = float(total.detach())
        return total, parts

    def _embedding_loss(self, hidden: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """alpha_kd * (1 - cosine) and/or MSE between the student's and the teacher's pooled embeddings."""
        import torch.nn.functional as F

        mine = pool_torch(hidden, mask, self.pooling)
        parts: dict[str, float] = {}
        total = mine.new_zeros(())
        if "cosine" in self.config.embedding_loss:
            distance = 1.0 - F.cosine_similarity(mine, target, dim=-1).mean()
            total = total + distance
            parts["cosine"] = float(distance.detach())
        if "mse" in self.config.embedding_loss:
            mse = F.mse_loss(mine, target)
            total = total + mse
            parts["mse"] = float(mse.detach())
        return self.config.alpha_kd * total, parts

    def _hidden_mse(self, student_hidden: tuple, teacher_hidden: tuple, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean squared error over real tokens only; index 0 of hidden_states is the embedding output."""
        import torch

        reference = teacher_hidden[0]
        weights = (mask if mask is not None else torch.ones(reference.shape[:2], device=self.device))
        weights = weights.unsqueeze(-1).to(reference.dtype)
        count = weights.sum() * reference.shape[-1]
        total = reference.new_zeros(())
        for student_layer, teacher_layer in self.layer_map.items():
            mine = student_hidden[student_layer + 1]
            if str(student_layer) in self.projections:
                mine = self.projections[str(student_layer)](mine)
            total = total + ((mine - teacher_hidden[teacher_layer + 1]) ** 2 * weights).sum() / count
        return total / len(self.layer_map)


def pool_torch(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """slimline.core.pooling.pool in torch (differentiable): (batch, tokens, width) -> (batch, width)."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    weights = (mask if mask is not None else torch.ones(hidden.shape[:2], device=hidden.device)).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(weights.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    return (hidden * weights.unsqueeze(-1)).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(1e-9)


@dataclass
class TrainingOutcome:
    steps: int
    planned_steps: int
    steps_per_epoch: int
    stopped_by: StopReason
    curve: list[dict[str, float]]  # per logged window: step, elapsed_s, learning_rate at its end, mean loss parts
    step_losses: list[float]

    def summary(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return round(float(np.mean(values)), 5) if values else None

        return {"steps": self.steps, "planned_steps": self.planned_steps, "steps_per_epoch": self.steps_per_epoch,
                "epochs_run": round(self.steps / self.steps_per_epoch, 3), "stopped_by": self.stopped_by,
                "loss_first": mean(self.step_losses[:SUMMARY_STEPS]),
                "loss_last": mean(self.step_losses[-SUMMARY_STEPS:])}


def plan_steps(steps_per_epoch: int, epochs: float, max_steps: int | None) -> tuple[int, StopReason]:
    """Steps to run, and which budget sets that number (the time budget can still stop it earlier)."""
    by_epochs = max(1, math.ceil(epochs * steps_per_epoch))
    if max_steps is not None and max_steps < by_epochs:
        return max_steps, "max_steps"
    return by_epochs, "epochs"


def _linear_schedule(config: KDConfig, planned: int, started: float) -> Callable[[int], float]:
    """Linear warmup then linear decay to 0, over whichever budget runs out first.

    Progress is the larger of steps done / planned and time spent / time_budget_s, so a run that the
    clock stops still ends with an annealed learning rate instead of being cut off at its peak. With
    a time budget the schedule, like the number of steps, depends on the machine's speed.
    """
    warmup = config.warmup_fraction

    def factor(step: int) -> float:
        done = step / planned
        if config.time_budget_s is not None:
            done = max(done, (time.perf_counter() - started) / config.time_budget_s)
        done = min(done, 1.0)
        return done / warmup if done < warmup else (1.0 - done) / (1.0 - warmup)

    return factor


def train(distiller: Distiller, data: TrainingSet, rng: np.random.Generator, started: float,
          description: str) -> TrainingOutcome:
    """Optimise until the epochs, max_steps or the wall-clock budget runs out, whichever comes first.

    The time budget counts from `started` (the pass's start, so loading and tokenising count) and
    is checked before each step: a step that would end past it, judging by the previous step's
    duration, is not started.
    """
    import torch

    config = distiller.config
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    planned, stopped_by = plan_steps(steps_per_epoch, config.epochs, config.max_steps)
    trainable = distiller.trainable()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(config, planned, started))
    labels = torch.from_numpy(data.labels).to(distiller.device) if data.labels is not None else None
    outcome = TrainingOutcome(0, planned, steps_per_epoch, stopped_by, [], [])
    window: list[dict[str, float]] = []
    last_step_s = 0.0  # the next step is assumed to take as long as the last one
    distiller.student.train()
    with reporter().step(description, total=planned) as progress:
        while outcome.steps < planned and outcome.stopped_by != "time_budget_s":
            for rows in length_buckets(data.lengths, config.batch_size, rng):
                if outcome.steps >= planned:
                    break
                step_started = time.perf_counter()
                if config.time_budget_s is not None and \
                        step_started - started + last_step_s > config.time_budget_s:
                    outcome.stopped_by = "time_budget_s"
                    break
                batch = data.batch(rows, distiller.device)
                total, parts = distiller.loss(batch, rows, None if labels is None else labels[torch.from_numpy(rows)])
                total.backward()
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                outcome.steps += 1
                outcome.step_losses.append(parts["loss"])
                window.append(parts)
                if outcome.steps % config.log_every_steps == 0:
                    outcome.curve.append(_curve_point(outcome.steps, started, window, scheduler.get_last_lr()[0]))
                    window = []
                last_step_s = time.perf_counter() - step_started
                progress.advance()
    if window:
        outcome.curve.append(_curve_point(outcome.steps, started, window, scheduler.get_last_lr()[0]))
    distiller.student.eval()
    log.info("%s: %d steps (%s), loss %s -> %s", description, outcome.steps, outcome.stopped_by,
             outcome.summary()["loss_first"], outcome.summary()["loss_last"])
    return outcome


def _curve_point(step: int, started: float, window: list[dict[str, float]], learning_rate: float) -> dict[str, float]:
    point: dict[str, float] = {"step": step, "elapsed_s": round(time.perf_counter() - started, 3),
                               "learning_rate": float(f"{learning_rate:.4g}")}
    for name in LOSS_PARTS:
        values = [parts[name] for parts in window if name in parts]
        if values:
            point[name] = round(float(np.mean(values)), 6)
    return point
