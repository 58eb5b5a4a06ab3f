"""Will this checkpoint load, and fit? Checked from config.json, the safetensors headers and the tokenizer, in
seconds, before any stage allocates a model.

A malformed tokenizer.json failed the run after 94 s (exit 3); a config with `hidden_size: 1e9`,
`max_position_embeddings: 1e12`, NaN sizes, `num_labels: 0` or an `id2label` that disagrees with the
classifier's weights failed after 40-83 s. Nothing here knows a model family:

1. every size-like number in config.json (found by name: `*_size`, `*_dim`, `num_*`, `n_*`, `*_layers`,
   `*_heads`, positions, vocab ..., nested configs included) must be a finite whole number within bounds
   no real model reaches;
2. the labels of a classifier (`id2label`, `num_labels`) must be 1..n classes with ids 0..n-1;
3. the model is built on PyTorch's meta device (shapes and dtypes, no memory), so its parameter memory is
   known exactly before anything is allocated, and refused when it exceeds this machine's RAM;
4. each tensor the safetensors headers declare (read without loading a tensor) must have the shape the
   config gives it: a head of 3 classes with `id2label` of 2 fails here, naming the tensor;
5. the tokenizer, where the checkpoint has one, is loaded;
6. given the profile, its sequence lengths must fit a learned position table (slimline.formats.positions).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

from slimline.core.errors import CheckpointError, shorten
from slimline.formats.architecture import refuse_unbuildable
from slimline.formats.hf import TASK_AUTO_CLASSES
from slimline.formats.positions import check_profile_tokens
from slimline.profiles.schema import Profile

#: Sizes (widths, vocabularies, positions, image sides): 16.7 M; the largest real ones are ~10 M positions.
MAX_SIZE = 1 << 24
#: Counts (heads, experts, groups, channels) and layers; their product bounds the modules the meta build makes.
MAX_COUNT = 4096
MAX_LAYERS = 1024
MAX_LAYER_EXPERTS = 1 << 18
MAX_LABELS = 1_000_000
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors format's own limit
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
FIX = "restore config.json from the original checkpoint (it must describe the weights saved beside it)."

_SIZE = re.compile(r"(_size|_sizes|_dim|_dims|_channels|_positions|_embeddings|_length|_len|_ctx)$"
                   r"|^(dim|d_model|d_ff|d_kv|d_inner|n_embd|n_inner|n_positions|n_ctx|vocab_size)$")
_COUNT = re.compile(r"^(num_|n_)|(_layers|_heads|_experts|_groups)$")
_NOT_A_SIZE = re.compile(r"dropout|prob|rate|ratio|eps|factor|scale|std|coef|theta|range|_id$|_ids$|token")


def _numbers(value: Any, where: str, depth: int = 0) -> list[tuple[str, Any]]:
    """(dotted key, value) of every number in a config, nested configs and lists included."""
    if isinstance(value, dict) and depth < 6:
        return [item for key, inner in value.items() for item in _numbers(inner, f"{where}.{key}" if where else
                                                                          str(key), depth + 1)]
    if isinstance(value, list) and depth < 6:
        return [item for index, inner in enumerate(value[:4096]) for item in _numbers(inner, f"{where}[{index}]",
                                                                                     depth + 1)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(where, value)]
    return []


def _field_name(where: str) -> str:
    return re.sub(r"\[\d+\]$", "", where).rsplit(".", 1)[-1]


def _limit_for(name: str) -> int | None:
    if _NOT_A_SIZE.search(name) or name in ("num_labels", "id2label", "label2id"):
        return None
    if _COUNT.search(name) and not _SIZE.search(name):
        return MAX_LAYERS if "layer" in name else MAX_COUNT
    return MAX_SIZE if _SIZE.search(name) else None


def check_config_numbers(config: dict[str, Any], path: Path) -> None:
    """Every size-like number: finite, whole, -1 (unset) or more, and below a bound no real model reaches."""
    problems = []
    layers = experts = 1
    for where, value in _numbers({k: v for k, v in config.items() if k not in ("id2label", "label2id")}, ""):
        name = _field_name(where)
        limit = _limit_for(name)
        if limit is None:
            continue
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            problems.append(f"{where} is {value}, not a whole number")
        elif value < -1:
            problems.append(f"{where} is {value:g}, a negative size")
        elif value > limit:
            problems.append(f"{where} is {value:.4g}, beyond any real model (at most {limit:,})")
        elif "layer" in name and _COUNT.search(name):
            layers = max(layers, int(value))
        elif "expert" in name:
            experts = max(experts, int(value))
    if not problems and layers * experts > MAX_LAYER_EXPERTS:
        problems.append(f"{layers} layers of {experts} experts ({layers * experts:,} expert blocks)")
    if problems:
        raise CheckpointError(f"{path}/config.json has impossible sizes: {'; '.join(problems[:5])}"
                              + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "") + ".", fix=FIX)


def check_labels(config: dict[str, Any], path: Path) -> int:
    """A classifier's class count from `id2label` (or `num_labels`): 1..MAX_LABELS classes, ids 0..n-1."""
    id2label, num_labels = config.get("id2label"), config.get("num_labels")
    where = f"{path}/config.json"
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int)):
        raise CheckpointError(f"{where}: num_labels is {shorten(num_labels)}, not a whole number.", fix=FIX)
    if id2label is None:
        count = 2 if num_labels is None else num_labels
    else:
        if not isinstance(id2label, dict):
            raise CheckpointError(f"{where}: id2label is a {type(id2label).__name__}, not a mapping of class ids "
                                  "to names.", fix=FIX)
        ids = sorted(int(key) for key in id2label if str(key).lstrip("-").isdigit())
        if len(ids) != len(id2label) or ids != list(range(len(ids))):
            raise CheckpointError(f"{where}: id2label's keys must be the class ids 0..{len(id2label) - 1}; they are "
                                  f"{shorten(list(id2label))}.", fix=FIX)
        names = list(id2label.values())
        if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
            raise CheckpointError(f"{where}: id2label's class names must be distinct strings; they are "
                                  f"{shorten(names)}.", fix=FIX)
        count = len(id2label)
        if num_labels is not None and num_labels != count:
            raise CheckpointError(f"{where}: num_labels is {num_labels}, but id2label names {count} classes.",
                                  fix="drop num_labels (transformers derives it from id2label) or make them agree.")
    if not 1 <= count <= MAX_LABELS:
        raise CheckpointError(f"{where}: a classifier with {count:,} classes (num_labels / id2label); it needs "
                              f"1 to {MAX_LABELS:,}.", fix=FIX)
    return count


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape from every *.safetensors header in `path` (8-byte length, then JSON), reading no
    tensor data; None when a header cannot be read (weight validation reports that)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > MAX_SAFETENSORS_HEADER:
                    return None
                header = json.loads(handle.read(length))
            for name, entry in header.items():
                if name != "__metadata__":
                    shapes[name] = tuple(int(d) for d in entry["shape"])
        except (OSError, ValueError, KeyError, TypeError, struct.error):
            return None
    return shapes or None


def usable_ram_bytes() -> int | None:
    """Physical memory, or the cgroup's limit when lower (a container's memory.max)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def meta_model(path: Path, task: str) -> Any:
    """The model transformers would build from config.json, on the meta device: shapes and dtypes, no memory."""
    import torch
    import transformers
    from transformers.integrations.accelerate import init_empty_weights

    try:
        config = transformers.AutoConfig.from_pretrained(path)
        # A config with pruned_heads (a pruned checkpoint) is built with only its parameters on the meta device:
        # prune_heads computes the rows to keep from ordinary tensors, which torch.nonzero cannot do on meta.
        # Otherwise everything goes to meta, buffers too, so absurd sizes allocate nothing.
        empty = (init_empty_weights(include_buffers=False) if getattr(config, "pruned_heads", None)
                 else torch.device("meta"))
        with empty:
            return getattr(transformers, TASK_AUTO_CLASSES[task]).from_config(config, attn_implementation="eager")
    except Exception as err:  # any failure to build from a config of a known architecture is the config's
        raise CheckpointError(f"transformers cannot build a {task} model from {path}/config.json: "
                              f"{type(err).__name__}: {shorten(str(err), 300)}.", fix=FIX) from err


def parameter_bytes(model: Any) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # tied weights once
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_fits_in_ram(model: Any, path: Path) -> None:
    needed, ram = parameter_bytes(model), usable_ram_bytes()
    if ram is not None and needed > ram:
        raise CheckpointError(f"{path}: its config.json makes a model of {needed / 2**30:,.1f} GiB of fp32 parameters "
                              f"(estimated on the meta device, nothing allocated); this machine has "
                              f"{ram / 2**30:,.1f} GiB of RAM.",
                              fix="check config.json's sizes; a model this large needs a machine with more memory.")


def check_weight_shapes(model: Any, shapes: dict[str, tuple[int, ...]], path: Path, labels: int | None) -> None:
    """Each saved tensor the model has must have the model's shape (names as transformers matches them:
    with or without the base model's prefix, LayerNorm's old gamma/beta)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    prefix = getattr(model, "base_model_prefix", "")
    mismatches = []
    for name, shape in shapes.items():
        renamed = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        for candidate in (name, renamed, f"{prefix}.{renamed}", renamed.removeprefix(f"{prefix}.")):
            if candidate in expected:
                if expected[candidate] != shape:
                    mismatches.append(f"{name} is {list(shape)} in the weights, {list(expected[candidate])} by the "
                                      "config")
                break
    if mismatches:
        hint = f" (config.json's id2label / num_labels give {labels} classes)" if labels is not None else ""
        raise CheckpointError(f"{path}: the weights do not match config.json{hint}: {'; '.join(mismatches[:4])}"
                              + (f" (and {len(mismatches) - 4} more)" if len(mismatches) > 4 else "") + ".",
                              fix="use the config.json saved with these weights (for a classifier, id2label must "
                                  "list as many classes as its head has outputs).")


def check_tokenizer(path: Path) -> None:
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return  # no tokenizer (vision models): the evaluators say what they need
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(path)
    except Exception as err:  # tokenizers' Rust errors ("EOF while parsing") have no common Python base
        files = [name for name in TOKENIZER_FILES if (path / name).is_file()]
        raise CheckpointError(f"the tokenizer in {path} ({', '.join(files)}) cannot be loaded: "
                              f"{type(err).__name__}: {shorten(str(err), 300)}.",
                              fix="restore the tokenizer files from the original checkpoint "
                                  "(tokenizer.save_pretrained).") from err


def check_checkpoint(path: Path, task: str, *, fp32_must_fit: bool = True, profile: Profile | None = None) -> None:
    """All of the module doc, for a Hugging Face checkpoint directory of `task`; CheckpointError (exit 2).

    `fp32_must_fit`: the command loads the fp32 model (run's and bench's baseline, export); `compress` may
    load it quantized instead (bitsandbytes passes), so there the memory estimate refuses nothing. `profile`:
    the shapes it will be fed, which must fit a learned position table (ProfileError; slimline.formats.positions)."""
    refuse_unbuildable(path, task)  # an architecture transformers cannot build has its own fix
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    check_config_numbers(config, path)
    labels = check_labels(config, path) if task in ("text-classification", "image-classification") else None
    model = meta_model(path, task)
    if fp32_must_fit:
        check_fits_in_ram(model, path)
    shapes = None if config.get("quantization_config") else safetensors_shapes(path)  # packed weights differ
    if shapes:
        check_weight_shapes(model, shapes, path, labels)
    if profile is not None:
        check_profile_tokens(model, config, task, path, profile)
    check_tokenizer(path)
