"""LoRA / PEFT adapters in: validate an adapter directory against its base checkpoint, and merge them.

Teams hand over `adapter_config.json` + `adapter_model.safetensors` and a base checkpoint. Everything
that can be checked without loading a model is checked in `open_adapter` (cheap: JSON, safetensors
headers, shapes of the LoRA factors against the base's weights), so a mismatched base fails before any
output exists. `merge_adapter` then folds the adapter into the base with peft's `merge_and_unload`,
saves a plain safetensors checkpoint and proves it: the saved checkpoint, reloaded, must give the
logits of base + adapter (unmerged) within a tolerance.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.core.artifact import ModelDir, sha256_file, sha256_json
from slimline.core.deps import INSTALL_HINTS, is_available, require
from slimline.core.errors import CheckpointError, MissingDependency, PassError
from slimline.formats.checkpoint import SUPPORTED_TASKS, open_checkpoint

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
#: peft's task_type -> the slimline task of the merged model.
PEFT_TASKS = {"SEQ_CLS": "text-classification", "CAUSAL_LM": "text-generation"}
#: Prompt-learning methods add virtual tokens instead of weight deltas: there is nothing to merge.
UNMERGEABLE_PEFT_TYPES = frozenset({"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING",
                                    "ADAPTION_PROMPT", "CPT"})
#: Files copied from the base, then from the adapter directory (a fine-tune may ship its own tokenizer).
SIDE_FILE_PATTERNS = ("tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "added_tokens.json",
                      "preprocessor_config.json", "generation_config.json", "*.model")
MERGE_ATOL = 1e-4
MERGE_RTOL = 1e-4
BASE_HELP = "pass --base with the base checkpoint's local directory (Python API: base=...)"


@dataclass(frozen=True)
class Adapter:
    """A validated adapter directory and the base checkpoint it applies to."""

    path: Path
    config: dict[str, Any]
    weights: Path
    files_sha256: dict[str, str]
    base: ModelDir
    task: str

    @property
    def sha256(self) -> str:
        """One digest over every adapter file (names and contents): what the lineage records."""
        return sha256_json(self.files_sha256)

    @property
    def base_sha256(self) -> str:
        return sha256_json(self.base.manifest.files)

    def lineage_config(self, merged_path: Path, merge: dict[str, Any]) -> dict[str, Any]:
        """The source step of a merged checkpoint: `path` is the merged checkpoint (the fp32 baseline every
        later stage is compared with); both inputs are named with the hashes of all their files."""
        keys = ("peft_type", "task_type", "r", "lora_alpha", "target_modules", "modules_to_save",
                "base_model_name_or_path")
        return {"path": str(merged_path.resolve()),
                "adapter": {"path": str(self.path.resolve()), "sha256": self.sha256,
                            "files_sha256": self.files_sha256,
                            "config": {k: self.config.get(k) for k in keys if k in self.config}},
                "base": {"path": str(self.base.path.resolve()), "sha256": self.base_sha256,
                         "files_sha256": self.base.manifest.files, "manifest_sha256": self.base.manifest_sha256},
                "merge": merge}


def is_adapter_dir(path: Path | str) -> bool:
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def _read_adapter_config(path: Path) -> dict[str, Any]:
    config_path = path / ADAPTER_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON: {err}.",
                              fix="restore adapter_config.json from the adapter's `save_pretrained`.") from err
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise CheckpointError(f"{config_path} has no 'peft_type': it is not a PEFT adapter config.",
                              fix="restore adapter_config.json from the adapter's `save_pretrained`.")
    if config["peft_type"] in UNMERGEABLE_PEFT_TYPES:
        raise CheckpointError(f"{path} is a {config['peft_type']} adapter: prompt-learning methods add virtual "
                              "tokens, not weight deltas, so there is nothing to merge into the base.",
                              fix="train a weight adapter (LoRA, LoHa, LoKr, IA3) or pass a full checkpoint.")
    return config


def _adapter_weights(path: Path) -> Path:
    """The adapter's weight file, parsed (safetensors header; a pickle only through weights_only=True)."""
    for name in ADAPTER_WEIGHTS:
        if (path / name).is_file():
            break
    else:
        raise CheckpointError(f"adapter {path} has {ADAPTER_CONFIG} but no weights ({' or '.join(ADAPTER_WEIGHTS)}).",
                              fix="copy the adapter weights saved by `save_pretrained` into this directory.")
    weights = path / name
    if weights.suffix == ".safetensors":
        _safetensors_shapes(weights, "adapter weights")
    else:
        import torch

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{weights} could not be loaded safely with torch.load(weights_only=True): {err}.",
                                  fix="re-save the adapter with save_pretrained(safe_serialization=True).") from err
        if not isinstance(state, dict) or not state:
            raise CheckpointError(f"{weights} is not a state dict of tensors.", fix="re-save the adapter.")
    return weights


def _safetensors_shapes(path: Path, what: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path} ({what}) is not a readable safetensors file: {err}.",
                              fix="re-save it with save_pretrained(safe_serialization=True).") from err
    if not shapes:
        raise CheckpointError(f"{path} ({what}) holds no tensors.", fix="re-save it with save_pretrained().")
    return shapes


def _resolve_base(path: Path, config: dict[str, Any], base: Path | None) -> Path:
    if base is not None:
        if not Path(base).expanduser().is_dir():
            raise CheckpointError(f"--base {base} is not a directory.",
                                  fix="pass the directory of the base checkpoint the adapter was trained on.")
        return Path(base).expanduser()
    named = config.get("base_model_name_or_path")
    if not named:
        raise CheckpointError(f"adapter {path} does not name its base model (no base_model_name_or_path).",
                              fix=BASE_HELP + ".")
    for candidate in (Path(named).expanduser(), path / named):
        if candidate.is_dir():
            return candidate
    looks_like_hub_id = not Path(named).is_absolute() and not named.startswith((".", "~")) and named.count("/") <= 1
    if looks_like_hub_id:
        raise CheckpointError(f"adapter {path} names its base as {named!r}, a Hugging Face Hub id; slimline works "
                              "offline and never downloads models.",
                              fix=f"download the base yourself and {BASE_HELP}.")
    raise CheckpointError(f"adapter {path} names its base as {named}, which does not exist here.",
                          fix=BASE_HELP + ".")


def _base_weight_shapes(base: ModelDir) -> dict[str, list[int]] | None:
    files = sorted(base.path.glob("*.safetensors"))
    if not files:
        return None  # a pickle checkpoint: the shapes are checked when peft loads the adapter
    shapes: dict[str, list[int]] = {}
    for file in files:
        shapes.update(_safetensors_shapes(file, "base weights"))
    return shapes


def _module_weight(key: str, marker: str) -> str:
    """`base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight` -> `bert...query.weight`."""
    module = key.split(marker, 1)[0]
    return module.removeprefix("base_model.model.") + ".weight"


def _find_base_key(wanted: str, base_shapes: dict[str, list[int]]) -> str | None:
    """The base tensor for a module path; a base saved without its head class's prefix (`bert.`) still matches."""
    if wanted in base_shapes:
        return wanted
    matches = [key for key in base_shapes if wanted.endswith("." + key)]
    return max(matches, key=len) if matches else None


def shape_problems(adapter_shapes: dict[str, list[int]], base_shapes: dict[str, list[int]],
                   fan_in_fan_out: bool = False) -> list[str]:
    """Why these LoRA factors cannot apply to this base (empty when they can): each factor's module must
    exist in the base, lora_A's input width and lora_B's output width must equal the module's. A base
    that stores weights as (in, out) (GPT-2's Conv1D: peft's fan_in_fan_out) has the axes swapped."""
    in_axis, out_axis = (0, 1) if fan_in_fan_out else (1, 0)
    problems = []
    for key, shape in sorted(adapter_shapes.items()):
        for marker, axis, factor_axis in ((".lora_A.", in_axis, 1), (".lora_B.", out_axis, 0)):
            if marker not in key or not key.endswith(".weight") or len(shape) != 2:
                continue
            base_key = _find_base_key(_module_weight(key, marker), base_shapes)
            if base_key is None:
                problems.append(f"{key}: the base has no module {_module_weight(key, marker).removesuffix('.weight')}")
            elif len(base_shapes[base_key]) == 2 and base_shapes[base_key][axis] != shape[factor_axis]:
                problems.append(f"{key} has shape {shape}, which does not fit the base's {base_key} "
                                f"{base_shapes[base_key]}")
    return problems


def open_adapter(path: Path | str, base: Path | str | None = None, task: str | None = None) -> Adapter:
    """Validate an adapter directory and its base without loading a model; raise CheckpointError (exit 2)."""
    path = Path(path).expanduser()
    if not is_adapter_dir(path):
        raise CheckpointError(f"{path} is not a PEFT adapter directory (no {ADAPTER_CONFIG}).",
                              fix="pass the directory the adapter's `save_pretrained` wrote, or drop --base.")
    config = _read_adapter_config(path)
    if not is_available("peft"):
        raise MissingDependency(f"merging the adapter {path} into its base needs peft, which is not installed.",
                                fix=INSTALL_HINTS["peft"])
    weights = _adapter_weights(path)
    base_path = _resolve_base(path, config, None if base is None else Path(base))
    if is_adapter_dir(base_path):
        raise CheckpointError(f"the base {base_path} is itself an adapter directory.",
                              fix="pass the full base checkpoint as --base (merge stacked adapters one at a time).")
    peft_task = PEFT_TASKS.get(str(config.get("task_type")))
    if task and peft_task and task != peft_task:
        raise CheckpointError(f"--task {task} contradicts the adapter's task_type {config.get('task_type')} "
                              f"({peft_task}).", fix="drop --task or pass the adapter trained for that task.")
    resolved_task = task or peft_task
    base_dir = open_checkpoint(base_path, resolved_task)
    if base_dir.manifest.format != "hf":
        raise CheckpointError(f"the base {base_path} is a {base_dir.manifest.format} model; an adapter merges into "
                              "a Hugging Face checkpoint.", fix=BASE_HELP + ".")
    if resolved_task is not None and resolved_task not in SUPPORTED_TASKS:
        raise CheckpointError(f"task {resolved_task!r} is not supported.", fix=f"use one of {SUPPORTED_TASKS}.")
    base_shapes = _base_weight_shapes(base_dir)
    if base_shapes is not None and weights.suffix == ".safetensors":
        problems = shape_problems(_safetensors_shapes(weights, "adapter weights"), base_shapes,
                                  bool(config.get("fan_in_fan_out")))
        if problems:
            shown = "\n  ".join(problems[:5]) + (f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise CheckpointError(f"adapter {path} does not fit the base {base_path}:\n  {shown}",
                                  fix="pass the base checkpoint the adapter was trained on as --base.")
    return Adapter(path=path, config=config, weights=weights, files_sha256=_adapter_files_sha256(path),
                   base=base_dir, task=base_dir.manifest.task)


def _adapter_files_sha256(path: Path) -> dict[str, str]:
    """The adapter's own files (top level: a trainer's checkpoint-*/ subdirectories are not the adapter)."""
    return {file.name: sha256_file(file) for file in sorted(path.iterdir()) if file.is_file()}


def _copy_side_files(source: Path, out_dir: Path) -> None:
    for pattern in SIDE_FILE_PATTERNS:
        for file in source.glob(pattern):
            if file.is_file() and file.name not in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS):
                shutil.copy2(file, out_dir / file.name)


def _check_feeds(adapter: Adapter) -> list[dict[str, Any]]:
    """Seeded random inputs, plus real sentences when a tokenizer ships (the export parity check's inputs)."""
    from slimline.formats.inputs import default_input_specs, synthetic_feeds
    from slimline.profiles.schema import Shape

    config = json.loads((adapter.base.path / "config.json").read_text(encoding="utf-8"))
    specs = default_input_specs(adapter.task)
    feeds = [synthetic_feeds(specs, Shape(batch_size=3, sequence_length=24), config, seed=1)]
    tokenizer_dir = next((d for d in (adapter.path, adapter.base.path) if (d / "tokenizer_config.json").is_file()),
                         None)
    if tokenizer_dir is not None and adapter.task != "image-classification":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if tokenizer.pad_token is not None:
            encoded = tokenizer(["The plot wobbles, but the ending lands.", "Not bad."], padding=True,
                                return_tensors="np")
            feeds.append({spec.name: encoded[spec.name] for spec in specs if spec.name in encoded})
    return feeds


def _logits(model: Any, feeds: list[dict[str, Any]]) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.float().numpy() for f in feeds]


def _max_abs_diff(left: list[Any], right: list[Any]) -> float:
    import numpy as np

    return max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(left, right, strict=True))


def _load_peft_model(adapter: Adapter, model: Any) -> Any:
    """peft only warns about adapter weights it could not place (a wrong base): here that is an error."""
    peft = require("peft", purpose=f"merging the adapter {adapter.path}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            peft_model = peft.PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False)
        except Exception as err:  # size mismatches, target modules not found in the base, bad config fields
            raise CheckpointError(f"peft could not apply the adapter {adapter.path} to the base {adapter.base.path}: "
                                  f"{type(err).__name__}: {err}",
                                  fix="pass the base checkpoint the adapter was trained on as --base.") from err
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise CheckpointError(f"the adapter {adapter.path} does not fit the base {adapter.base.path}: {missing[0]}",
                              fix="pass the base checkpoint the adapter was trained on as --base.")
    return peft_model.eval()


def merge_adapter(adapter: Adapter, out_dir: Path, atol: float = MERGE_ATOL,
                  rtol: float = MERGE_RTOL) -> dict[str, Any]:
    """Merge into `out_dir` (config.json + model.safetensors + tokenizer) and prove the merge.

    The reference is base + adapter as peft runs them (unmerged LoRA layers); the candidate is the
    saved checkpoint reloaded from disk, so a save that dropped or mangled a tensor fails too. Raises
    PassError (exit 3) when the logits differ by more than atol + rtol * max|reference|.
    """
    import torch

    from slimline.formats.hf import load_hf_model

    torch.manual_seed(0)
    feeds = _check_feeds(adapter)
    model = load_hf_model(adapter.base.path, adapter.task)
    base_logits = _logits(model, feeds)
    peft_model = _load_peft_model(adapter, model)
    expected = _logits(peft_model, feeds)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    _copy_side_files(adapter.base.path, out_dir)
    _copy_side_files(adapter.path, out_dir)
    actual = _logits(load_hf_model(out_dir, adapter.task), feeds)
    diff = _max_abs_diff(actual, expected)
    scale = max(float(abs(e).max()) for e in expected)
    tolerance = atol + rtol * scale
    result = {"max_abs_diff": diff, "tolerance": tolerance, "atol": atol, "rtol": rtol,
              "adapter_effect_max_abs": _max_abs_diff(base_logits, expected),
              "compared_logits": int(sum(e.size for e in expected))}
    if not diff <= tolerance:  # also catches NaN
        raise PassError(f"the merged checkpoint does not reproduce base + adapter: max |diff| of the logits = "
                        f"{diff:.3g} (tolerance {tolerance:.3g}) for the adapter {adapter.path} on "
                        f"{adapter.base.path}.",
                        fix="check that the adapter loads in peft as trained (same peft version and base); "
                            "report it if it does, with this message.")
    return result
