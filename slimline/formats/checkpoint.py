"""Open an input checkpoint: a slimline model directory, a plain Hugging Face directory, or an ONNX / TorchScript
file (slimline.formats.model_files builds its model directory).

A plain HF directory gets an in-memory manifest (we never write into the user's checkpoint).
Weights are validated before any heavy work: safetensors headers must parse, and a pickle
`.bin` is only ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from pathlib import Path

from slimline.core.artifact import MANIFEST_NAME, LineageStep, Manifest, ModelDir, hash_tree, new_provenance
from slimline.core.errors import CheckpointError

#: Suffix of a transformers architecture name -> the task slimline benchmarks it as.
ARCHITECTURE_TASKS = {
    "ForSequenceClassification": "text-classification",
    "ForCausalLM": "text-generation",
    "LMHeadModel": "text-generation",
    "ForImageClassification": "image-classification",
}
#: A bare text encoder (BertModel, MPNetModel, XLMRobertaModel: sentence-transformers checkpoints) outputs
#: per-token hidden states that its users pool into embeddings.
BARE_ENCODER_SUFFIX, EMBEDDING_TASK = "Model", "feature-extraction"
SUPPORTED_TASKS = tuple(sorted({*ARCHITECTURE_TASKS.values(), EMBEDDING_TASK}))


def infer_task(config: dict) -> str | None:
    """The task of the first architecture with a known head; else an embedding model for a bare text encoder
    (a config with a vocabulary: a bare vision backbone has no inputs slimline could make up)."""
    architectures = config.get("architectures") or []
    for architecture in architectures:
        for suffix, task in ARCHITECTURE_TASKS.items():
            if architecture.endswith(suffix):
                return task
    if "vocab_size" in config and any(a.endswith(BARE_ENCODER_SUFFIX) for a in architectures):
        return EMBEDDING_TASK
    return None


def read_hf_config(path: Path) -> dict:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{path} has no config.json: it is not a Hugging Face checkpoint.",
            fix="point --checkpoint at a directory written by `save_pretrained` (config.json + model.safetensors).",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}.",
                              fix="restore config.json from the original checkpoint.") from err
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{config_path} has no 'model_type'.",
                              fix="restore config.json from the original checkpoint.")
    return config


def _validate_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = list(handle.keys())
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}.",
                              fix="re-save the checkpoint with save_pretrained(safe_serialization=True).") from err
    if not keys:
        raise CheckpointError(f"{path} holds no tensors.", fix="re-save the checkpoint.")


def _validate_pickle(path: Path) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path} could not be loaded safely with torch.load(weights_only=True): {err}.",
            fix="convert the checkpoint to safetensors (save_pretrained(safe_serialization=True)).",
        ) from err
    from slimline.formats.state_dict import unwrap_state_dict

    unwrapped = unwrap_state_dict(state, str(path))  # refuses naming the keys it found
    if unwrapped.steps:  # transformers reads the file itself and takes no wrapper: say where the weights are
        raise CheckpointError(f"{path} is a training checkpoint, not a state dict: {unwrapped.note}; transformers "
                              "cannot load it as it is.",
                              fix="load your model, load_state_dict() the entry named above, and save_pretrained() "
                                  "it; or pass the file to --weights with --model-factory, which unwraps it.")


def validate_hf_weights(path: Path) -> list[Path]:
    """Check the weight files exist and parse; returns them."""
    safetensors_files = sorted(path.glob("*.safetensors"))
    pickle_files = sorted(path.glob("pytorch_model*.bin"))
    if not safetensors_files and not pickle_files:
        raise CheckpointError(
            f"{path} has no weights (no *.safetensors and no pytorch_model*.bin).",
            fix="save the model with save_pretrained() into this directory.",
        )
    for file in safetensors_files:
        _validate_safetensors(file)
    if not safetensors_files:
        for file in pickle_files:
            _validate_pickle(file)
    return safetensors_files or pickle_files


def open_checkpoint(path: Path | str, task: str | None = None) -> ModelDir:
    """Open and validate an input checkpoint; raise CheckpointError with the fix if unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.", fix="check the --checkpoint path.")
    from slimline.formats.model_files import model_file_checkpoint

    from_file = model_file_checkpoint(path, task=task)  # an ONNX graph or a TorchScript archive: its model dir
    if from_file is not None:
        return from_file
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a file, not a directory, an ONNX file or a TorchScript archive.",
                              fix="pass the directory that holds config.json and the weights, a .onnx file, or a "
                                  "torch.jit.save archive (with --inputs).")
    if (path / MANIFEST_NAME).is_file():
        model_dir = ModelDir.open(path)
        if task and task != model_dir.manifest.task:
            raise CheckpointError(f"--task {task} contradicts the manifest's task {model_dir.manifest.task}.",
                                  fix="drop --task or fix the manifest.")
        return model_dir
    config = read_hf_config(path)
    validate_hf_weights(path)
    resolved_task = task or infer_task(config)
    if resolved_task is None:
        raise CheckpointError(
            f"cannot tell the task of {path}: architectures={config.get('architectures')}.",
            fix=f"pass --task, one of {', '.join(SUPPORTED_TASKS)}.",
        )
    if resolved_task not in SUPPORTED_TASKS:
        raise CheckpointError(f"task {resolved_task!r} is not supported.",
                              fix=f"use one of {', '.join(SUPPORTED_TASKS)}.")
    files = hash_tree(path)
    manifest = Manifest(
        format="hf",
        task=resolved_task,
        lineage=[LineageStep(kind="source", name="hf-checkpoint", config={"path": str(path.resolve())})],
        provenance=new_provenance(),
        metadata={"model_type": config["model_type"]},
        files=files,
    )
    return ModelDir(path, manifest)
