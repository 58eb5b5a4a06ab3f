"""Can this transformers release build the checkpoint at all? Asked before an export is blamed on an op.

A checkpoint whose `model_type` transformers does not know (a custom network with a hand-written
config.json, or an architecture newer than the pinned transformers) fails in every exporter and every
loader; so does a known model_type without a head for the requested task. Those are input problems with
their own fixes, not opset problems, and are told apart here from config.json alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from slimline.core.errors import CheckpointError

#: slimline task -> transformers' mapping of model_type -> class name for that head.
TASK_MAPPINGS = {
    "text-classification": ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "AutoModelForSequenceClassification"),
    "text-generation": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
    "image-classification": ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "AutoModelForImageClassification"),
    "feature-extraction": ("MODEL_MAPPING_NAMES", "AutoModel"),
}
PLAIN_MODULE_PATH = ("if it is a plain PyTorch network, give slimline the module instead of a config.json: "
                     "`slimline run --model-factory pkg.module:callable --weights FILE --inputs inputs.yaml` "
                     "(Python API: slimline.run(model=module, example_inputs=...))")


@dataclass(frozen=True)
class ArchitectureProblem:
    message: str
    fix: str


def _transformers_version() -> str:
    from importlib.metadata import version

    return version("transformers")


def architecture_problem(path: Path, task: str | None) -> ArchitectureProblem | None:
    """Why transformers cannot build `path` for `task`, or None when it can (or config.json is unreadable:
    checkpoint validation reports that). Imports transformers' auto mappings only (no model code)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        return None
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    version = _transformers_version()
    if model_type not in CONFIG_MAPPING_NAMES:
        if config.get("auto_map"):
            return ArchitectureProblem(
                f"{path}/config.json declares model_type {model_type!r} with its own modelling code (auto_map); "
                "slimline never runs code shipped inside a checkpoint (trust_remote_code), and transformers "
                f"{version} has no built-in class for it.", fix=PLAIN_MODULE_PATH + ".")
        return ArchitectureProblem(
            f"transformers {version} does not recognize model_type {model_type!r} ({path}/config.json): it is not "
            "an architecture this transformers release can build, so no exporter or loader can run it (this is "
            "not an ONNX opset problem).",
            fix=PLAIN_MODULE_PATH + f"; if it is a transformers architecture newer than {version}, it needs a "
                "newer transformers than slimline pins (optimum-onnx requires transformers<4.58).")
    if task in TASK_MAPPINGS:
        mapping_name, auto_class = TASK_MAPPINGS[task]
        heads = getattr(modeling_auto, mapping_name)
        if model_type not in heads:
            others = [t for t, (m, _) in TASK_MAPPINGS.items() if t != task and model_type in getattr(modeling_auto, m)]
            return ArchitectureProblem(
                f"transformers {version} has no {auto_class} for model_type {model_type!r} ({path}): that "
                f"architecture has no {task} head.",
                fix=(f"pass --task {others[0]}" if others else "use a checkpoint with a supported head")
                + f" (architectures in config.json: {config.get('architectures')}).")
    return None


def refuse_unbuildable(path: Path, task: str | None) -> None:
    """Before any stage: a model_type transformers cannot build (or without the task's head) is bad input
    (exit 2) with its own fix, not an export failure blamed on the opset."""
    problem = architecture_problem(path, task)
    if problem is not None:
        raise CheckpointError(problem.message, fix=problem.fix)
