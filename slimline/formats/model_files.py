"""Models that arrive as files: an ONNX graph (a `.onnx` file, or a directory holding one without a manifest) or a
TorchScript module (`torch.jit.save`), each turned into a slimline model directory automatically.

The directory is built once under the cache (`SLIMLINE_CACHE_DIR/model-files/<hash>`), named by the hash of the
file(s) and the input spec, and never written into the user's directory. Its manifest declares the inputs and
outputs: for ONNX read from the graph (names, dtypes, dynamic axes; an `--inputs` spec may rename axes, e.g. say
which one is the batch, and must agree with the graph); for TorchScript, which records no dtypes or shapes, from
the input spec, whose names must be forward()'s. An ONNX model's fp32 baseline is the graph itself on ONNX
Runtime; a TorchScript module is a `torch-module` directory (its baseline is the module on PyTorch, and the
pipeline exports it to ONNX like any plain module).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from slimline.core.artifact import (
    MANIFEST_NAME,
    LineageStep,
    Manifest,
    ModelDir,
    TensorSpec,
    atomic_directory,
    new_provenance,
    sha256_file,
    sha256_json,
    write_manifest,
)
from slimline.core.errors import CheckpointError
from slimline.core.paths import cache_root
from slimline.formats.inputs import BATCH_AXIS_NAMES, FEEDABLE_DTYPES
from slimline.formats.torch_module import TORCH_MODULE_FORMAT, ModuleInputSpec

#: Files beside an ONNX graph in a directory that make its model directory self-contained for serving.
SIDE_FILE_PATTERNS = ("config.json", "tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json",
                      "preprocessor_config.json", "generation_config.json", "*.model", "added_tokens.json")
TORCHSCRIPT_FILE = "model.pt"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


def _hf_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def onnx_file_in(path: Path) -> Path | None:
    """The ONNX graph `path` names: a `.onnx` file, or the one `.onnx` in a directory that is neither a slimline
    model directory nor a Hugging Face checkpoint (config.json with weights); else None. Several graphs in one
    directory, without a `model.onnx` among them, are refused."""
    if path.is_file():
        return path if path.suffix == ".onnx" else None
    hugging_face = (path / "config.json").is_file() and _hf_weights(path)
    if not path.is_dir() or (path / MANIFEST_NAME).is_file() or hugging_face:
        return None
    graphs = sorted(path.glob("*.onnx"))
    if len(graphs) > 1 and not (path / "model.onnx").is_file():
        raise CheckpointError(f"{path} holds several ONNX graphs ({', '.join(g.name for g in graphs)}) and no "
                              "model.onnx.", fix="pass the one to use: --checkpoint DIR/NAME.onnx.")
    return (path / "model.onnx") if len(graphs) > 1 else (graphs[0] if graphs else None)


def is_torchscript_file(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save): a zip whose entries hold TorchScript code. torch.save writes zips
    too, but with no `code/` entries."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def model_file_checkpoint(path: Path, spec: ModuleInputSpec | None = None, task: str | None = None,
                          cache: Path | None = None) -> ModelDir | None:
    """The model directory for an ONNX or TorchScript source at `path`, built once and reused; None when `path` is
    neither (a Hugging Face checkpoint, a slimline directory ...)."""
    path = Path(path).expanduser()
    root = cache or cache_root() / "model-files"
    graph = onnx_file_in(path)
    if graph is not None:
        return _onnx_model_dir(graph, path.is_dir(), spec, task, root)
    if is_torchscript_file(path):
        return _torchscript_model_dir(path, spec, task, root)
    if path.is_file() and path.suffix in TORCHSCRIPT_SUFFIXES:
        raise CheckpointError(f"{path} is not a TorchScript archive (torch.jit.save) and not an ONNX file: a state "
                              "dict or a pickled module cannot be run without its code.",
                              fix="pass the module's code with --model-factory pkg.module:build --weights "
                                  f"{path.name} --inputs inputs.yaml, or save it with torch.jit.save / export ONNX.")
    return None


def _onnx_dtype(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # an element type numpy has no dtype for (bfloat16, float8 ...)
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def graph_io(model: Any) -> tuple[list[TensorSpec], list[str]]:
    """Declared inputs (initializers listed as inputs by old exporters left out) and output names. A dimension
    with neither a value nor a name gets one (`<input>_dim<i>`): it is dynamic."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims: list[int | str] = [d.dim_param or (d.dim_value if d.dim_value > 0 else f"{value.name}_dim{i}")
                                 for i, d in enumerate(tensor_type.shape.dim)]
        inputs.append(TensorSpec(name=value.name, dtype=_onnx_dtype(tensor_type.elem_type), shape=dims))
    return inputs, [value.name for value in model.graph.output]


def _name_the_batch(inputs: list[TensorSpec]) -> tuple[list[TensorSpec], str | None]:
    """When no input names a batch axis but every input of rank >= 1 starts with the same dynamic axis (exporters
    call it `s0`, `unk__12` ...), that axis is the batch: renamed `batch` in the manifest (the graph is unchanged)."""
    if any(axis in BATCH_AXIS_NAMES for spec in inputs for axis in spec.shape):
        return inputs, None
    firsts = {spec.shape[0] for spec in inputs if spec.shape}
    if len(firsts) != 1 or not isinstance(next(iter(firsts)), str):
        return inputs, None
    name = next(iter(firsts))
    return [spec.model_copy(update={"shape": ["batch" if axis == name else axis for axis in spec.shape]})
            for spec in inputs], name


def _merge_spec(graph_inputs: list[TensorSpec], spec: ModuleInputSpec, source: Path) -> list[TensorSpec]:
    """The spec's inputs, checked against the graph's: the same names, dtypes and ranks, fixed sizes kept."""
    by_name = {s.name: s for s in graph_inputs}
    named = {s.name for s in spec.inputs}
    if named != set(by_name):
        raise CheckpointError(f"the input spec names {sorted(named)}, but {source} takes {sorted(by_name)}.",
                              fix="list exactly the graph's inputs in the spec (or leave --inputs out: they are "
                                  "read from the graph).")
    merged = []
    for wanted in spec.inputs:
        graph = by_name[wanted.name]
        fixed_differs = any(isinstance(g, int) and isinstance(w, int) and g != w
                            for g, w in zip(graph.shape, wanted.shape, strict=False))
        if wanted.dtype != graph.dtype or len(wanted.shape) != len(graph.shape) or fixed_differs:
            raise CheckpointError(f"input {wanted.name}: the spec says {wanted.dtype} {wanted.shape}, the graph "
                                  f"{graph.dtype} {graph.shape}.",
                                  fix="give the graph's dtype and rank; only the names of dynamic axes may differ "
                                      "(e.g. name the batch axis `batch`).")
        merged.append(wanted)
    return merged


def _graph_tensors(graph: Any) -> list[Any]:
    """Every tensor a graph stores: initializers and tensor attributes, in subgraphs (If, Loop) too."""
    import onnx

    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                tensors.append(attribute.t)
            tensors += [t for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else [])
                        + list(attribute.graphs) for t in _graph_tensors(subgraph)]
    return tensors


def _external_data_files(model: Any, directory: Path) -> list[Path]:
    import onnx

    names = set()
    for tensor in _graph_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.add(next(entry.value for entry in tensor.external_data if entry.key == "location"))
    files = []
    for name in sorted(names):
        file = (directory / name).resolve()
        if not file.is_relative_to(directory.resolve()) or not file.is_file():
            raise CheckpointError(f"the graph's external data {name!r} is not a file beside it in {directory}.",
                                  fix="keep the .onnx and its external data files together.")
        files.append(file)
    return files


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the cache shares the filesystem (no second copy of a large graph), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _config_facts(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(config, dict):
        return {}
    from slimline.formats.checkpoint import infer_task

    facts: dict[str, Any] = {"task": infer_task(config)}
    if isinstance(config.get("model_type"), str):
        facts["model_type"] = config["model_type"]
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        facts["label_names"] = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k) if str(k).isdigit() else 0)]
    return facts


def _onnx_model_dir(graph_path: Path, from_directory: bool, spec: ModuleInputSpec | None, task: str | None,
                    root: Path) -> ModelDir:
    import onnx

    try:
        model = onnx.load(str(graph_path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError, OSError ...
        raise CheckpointError(f"{graph_path} is not a readable ONNX model: {err}.",
                              fix="re-export it (torch.onnx.export, optimum-cli export onnx).") from err
    directory = graph_path.parent
    data_files = _external_data_files(model, directory)
    side_files = sorted({p for pattern in SIDE_FILE_PATTERNS for p in directory.glob(pattern) if p.is_file()}
                        if from_directory else [])
    graph_inputs, outputs = graph_io(model)
    unfeedable = [f"{s.name} ({s.dtype})" for s in graph_inputs if s.dtype not in FEEDABLE_DTYPES]
    if unfeedable:
        raise CheckpointError(f"{graph_path} takes input(s) {', '.join(unfeedable)}, which slimline cannot feed.",
                              fix=f"inputs must be numeric tensors: {', '.join(FEEDABLE_DTYPES)}.")
    facts = _config_facts(directory / "config.json") if from_directory else {}
    inputs, renamed = (_merge_spec(graph_inputs, spec, graph_path), None) if spec else _name_the_batch(graph_inputs)
    chosen_task = task or (spec.task if spec and "task" in spec.model_fields_set else None) or facts.get("task") \
        or "tensor"
    files = {p.name: sha256_file(p) for p in [graph_path, *data_files, *side_files]}
    key = sha256_json({"files": files, "inputs": [s.model_dump() for s in inputs], "task": chosen_task,
                       "spec": spec.model_dump(mode="json") if spec else None})[:16]
    final = root / f"onnx-{key}"
    if (final / MANIFEST_NAME).is_file():
        return ModelDir.open(final)
    labels = (spec.label_names if spec else None) or facts.get("label_names")
    metadata: dict[str, Any] = {
        "source_format": "onnx", "inputs_from": "input spec" if spec else "graph",
        **({"model_type": facts["model_type"]} if facts.get("model_type") else {}),
        **({"label_names": labels} if labels else {}),
        **({"batch_axis_renamed": renamed} if renamed else {}),
        **({"image_preprocess": spec.image_preprocess.model_dump()} if spec and spec.image_preprocess else {}),
        "onnx_opsets": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    with atomic_directory(final, replace=True) as tmp:
        for file in [graph_path, *data_files, *side_files]:
            _link_or_copy(file, tmp / file.name)
        write_manifest(tmp, Manifest(
            format="onnx", task=chosen_task, model_file=graph_path.name, inputs=inputs, outputs=outputs,
            lineage=[LineageStep(kind="source", name="onnx-file",
                                 config={"path": str(graph_path.resolve()), "sha256": files[graph_path.name],
                                         "directory": str(directory.resolve()) if from_directory else None})],
            provenance=new_provenance(), metadata=metadata))
    return ModelDir.open(final)


def forward_argument_names(module: Any) -> list[str]:
    """forward()'s argument names from a ScriptModule's schema (self left out)."""
    return [argument.name for argument in module.forward.schema.arguments[1:]]


def load_torchscript(path: Path) -> Any:
    """The module in a TorchScript archive, on the CPU, in eval mode.

    torch.jit.load reads the archive with TorchScript's own loader: its data and constants are restored by
    TorchScript's restricted unpickler (tensors and TorchScript types only), and the module's code is TorchScript
    run by TorchScript's interpreter; no Python pickle is ever executed, so torch.load's `weights_only` does not
    apply (and is not needed). A torch.save pickle of a whole module is refused before this (is_torchscript_file).
    """
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # RuntimeError from the loader for a damaged archive or an unknown op
        raise CheckpointError(f"{path} could not be loaded with torch.jit.load: {err}.",
                              fix="re-save the module with torch.jit.save(torch.jit.script(model) or "
                                  "torch.jit.trace(model, example)).") from err


def _torchscript_model_dir(path: Path, spec: ModuleInputSpec | None, task: str | None, root: Path) -> ModelDir:
    module = load_torchscript(path)
    arguments = forward_argument_names(module)
    if spec is None:
        raise CheckpointError(f"{path} is a TorchScript module, which records its inputs' names ({arguments}) but "
                              "not their dtypes or shapes.",
                              fix="pass --inputs inputs.yaml (Python: inputs=...): inputs: [{name: x, dtype: float32, "
                                  "shape: [batch, 3, 224, 224]}] (strings in a shape are dynamic axes).")
    named = [s.name for s in spec.inputs]
    required = [a.name for a in module.forward.schema.arguments[1:] if not a.has_default_value()]
    if named != arguments[:len(named)] or not set(required) <= set(named):
        raise CheckpointError(f"the input spec names {named}, but {path}'s forward() takes {arguments}.",
                              fix="list forward()'s arguments in order in the spec.")
    weights_sha256 = sha256_file(path)
    chosen = spec.model_copy(update={"task": task}) if task else spec
    key = sha256_json({"torchscript": weights_sha256, "spec": chosen.model_dump(mode="json")})[:16]
    final = root / f"torchscript-{key}"
    if (final / MANIFEST_NAME).is_file():
        return ModelDir.open(final)
    with atomic_directory(final, replace=True) as tmp:
        _link_or_copy(path, tmp / TORCHSCRIPT_FILE)
        write_manifest(tmp, Manifest(
            format=TORCH_MODULE_FORMAT, task=chosen.task, model_file=TORCHSCRIPT_FILE, inputs=chosen.inputs,
            outputs=chosen.outputs,
            lineage=[LineageStep(kind="source", name="torchscript",
                                 config={"path": str(path.resolve()), "weights_sha256": weights_sha256})],
            provenance=new_provenance(),
            metadata={"torchscript": True, "weights_sha256": weights_sha256, "weights_file": str(path.resolve()),
                      "factory": f"torch.jit.load({path.name})",
                      "parameters": int(sum(p.numel() for p in module.parameters())),
                      **({"label_names": chosen.label_names} if chosen.label_names else {}),
                      **({"image_preprocess": chosen.image_preprocess.model_dump()} if chosen.image_preprocess
                         else {})}))
    return ModelDir.open(final)
