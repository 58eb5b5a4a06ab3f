"""Loading Hugging Face models by slimline task name (shared by export's parity check and bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.core.errors import CheckpointError

TASK_AUTO_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "text-generation": "AutoModelForCausalLM",
    "image-classification": "AutoModelForImageClassification",
    "feature-extraction": "AutoModel",
}


def load_hf_model(path: Path, task: str) -> Any:
    """fp32 eager model in eval mode; safetensors preferred, pickles only with weights_only=True."""
    import transformers

    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    try:
        model = auto_class.from_pretrained(path, dtype="float32", attn_implementation="eager")
    except Exception as err:
        from slimline.formats.architecture import architecture_problem

        problem = architecture_problem(path, task)  # an unknown model_type or a missing head has its own fix
        if problem is not None:
            raise CheckpointError(problem.message, fix=problem.fix) from err
        raise CheckpointError(f"transformers could not load {path} as {task}: {err}.",
                              fix="check that the checkpoint matches its config.json and the task.") from err
    return model.eval()
