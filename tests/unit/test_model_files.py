"""ONNX and TorchScript files in: each becomes a slimline model directory whose manifest declares what the graph
(or the input spec) says, built once in the cache, never written into the user's directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streaming_model import INPUT_SPEC, write_eval_chunks, write_streaming_onnx, write_streaming_torchscript

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import CheckpointError, DataError
from slimline.formats.checkpoint import open_checkpoint
from slimline.formats.model_files import is_torchscript_file, model_file_checkpoint, onnx_file_in
from slimline.formats.torch_module import load_input_spec, load_module


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    write_streaming_onnx(root / "stream.onnx")
    write_streaming_torchscript(root / "stream.pt")
    (root / "inputs.yaml").write_text(INPUT_SPEC)
    return root


def test_an_onnx_file_declares_the_graph_s_inputs_with_a_batch_axis_that_is_not_first_and_a_scalar(
        files: Path, cache: Path) -> None:
    model = open_checkpoint(files / "stream.onnx")
    assert model.manifest.format == "onnx" and model.manifest.task == "tensor"
    assert model.manifest.inputs == [TensorSpec(name="chunk", dtype="float32", shape=["batch", "time", 40]),
                                     TensorSpec(name="state", dtype="float32", shape=[2, "batch", 64]),
                                     TensorSpec(name="gain", dtype="float32", shape=[])]
    assert model.manifest.outputs == ["logits", "next_state"]
    assert model.path.is_relative_to(cache) and model.manifest.files  # hashed, in the cache
    [source] = model.manifest.lineage
    assert source.name == "onnx-file" and source.config["path"] == str((files / "stream.onnx").resolve())
    assert sorted(p.name for p in files.iterdir()) == ["inputs.yaml", "stream.onnx", "stream.pt"]  # nothing written
    again = open_checkpoint(files / "stream.onnx")
    assert again.path == model.path and again.manifest_sha256 == model.manifest_sha256  # built once, reused


def test_a_directory_holding_one_graph_and_a_config_takes_its_task_labels_and_model_type(files: Path,
                                                                                         tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    shutil.copy(files / "stream.onnx", folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "neg", "1": "pos"},
                                                    "architectures": ["BertForSequenceClassification"]}))
    model = open_checkpoint(folder)
    assert model.manifest.task == "text-classification" and model.manifest.metadata["model_type"] == "bert"
    assert model.manifest.metadata["label_names"] == ["neg", "pos"] and (model.path / "config.json").is_file()


def test_several_graphs_without_a_model_onnx_are_refused_naming_them(files: Path, tmp_path: Path) -> None:
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(files / "stream.onnx", tmp_path / name)
    with pytest.raises(CheckpointError, match=r"several ONNX graphs \(a\.onnx, b\.onnx\)"):
        onnx_file_in(tmp_path)


def test_a_corrupt_onnx_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(CheckpointError, match="is not a readable ONNX model"):
        open_checkpoint(tmp_path / "broken.onnx")


def test_an_input_spec_may_rename_axes_but_must_agree_with_the_graph(files: Path) -> None:
    renamed = load_input_spec({"inputs": [{"name": "chunk", "dtype": "float32", "shape": ["batch", "frames", 40]},
                                          {"name": "state", "dtype": "float32", "shape": [2, "batch", 64]},
                                          {"name": "gain", "dtype": "float32", "shape": []}], "task": "tensor"})
    model = model_file_checkpoint(files / "stream.onnx", renamed)
    assert model.manifest.inputs[0].shape == ["batch", "frames", 40] and model.manifest.metadata["inputs_from"] == \
        "input spec"
    wrong_size = renamed.model_copy(update={"inputs": [renamed.inputs[0], TensorSpec(
        name="state", dtype="float32", shape=[3, "batch", 64]), renamed.inputs[2]]})
    with pytest.raises(CheckpointError, match=r"input state: the spec says float32 \[3, 'batch', 64\]"):
        model_file_checkpoint(files / "stream.onnx", wrong_size)
    with pytest.raises(CheckpointError, match=r"the input spec names \['chunk'\]"):
        model_file_checkpoint(files / "stream.onnx", renamed.model_copy(update={"inputs": renamed.inputs[:1]}))


def test_an_unnamed_first_axis_shared_by_every_input_becomes_the_batch(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["s0", 4]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["s0", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["s0", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "add.onnx")
    model = open_checkpoint(tmp_path / "add.onnx")
    assert [s.shape for s in model.manifest.inputs] == [["batch", 4], ["batch", 4]]
    assert model.manifest.metadata["batch_axis_renamed"] == "s0"


def test_a_graph_with_external_data_brings_it_along(files: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(files / "stream.onnx"))
    folder = tmp_path / "big"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    opened = open_checkpoint(folder)
    assert {"model.onnx", "weights.bin"} <= set(opened.manifest.files)
    import onnxruntime as ort

    ort.InferenceSession(str(opened.model_path), providers=["CPUExecutionProvider"])  # loads from the cache


def test_a_torchscript_file_needs_an_input_spec_and_says_what_forward_takes(files: Path) -> None:
    assert is_torchscript_file(files / "stream.pt")
    with pytest.raises(CheckpointError, match=r"records its inputs' names \(\['chunk', 'state', 'gain'\]\)") as err:
        open_checkpoint(files / "stream.pt")
    assert "--inputs" in (err.value.fix or "")


def test_a_torchscript_file_with_its_spec_is_a_module_directory_the_baseline_loads(files: Path) -> None:
    import torch

    model = model_file_checkpoint(files / "stream.pt", load_input_spec(files / "inputs.yaml"))
    assert model.manifest.format == "torch-module" and model.manifest.metadata["torchscript"] is True
    assert model.manifest.model_file == "model.pt" and model.size_mb() > 0.1
    module = load_module(ModelDir.open(model.path))
    logits, state = module(torch.zeros(1, 4, 40), torch.zeros(2, 1, 64), torch.tensor(1.0))
    assert logits.shape == (1, 4, 12) and state.shape == (2, 1, 64)


def test_a_spec_whose_names_are_not_forward_s_is_refused(files: Path) -> None:
    spec = load_input_spec(files / "inputs.yaml")
    swapped = spec.model_copy(update={"inputs": [spec.inputs[1], spec.inputs[0], spec.inputs[2]]})
    with pytest.raises(CheckpointError, match=r"forward\(\) takes \['chunk', 'state', 'gain'\]"):
        model_file_checkpoint(files / "stream.pt", swapped)


def test_a_torch_save_state_dict_is_not_mistaken_for_torchscript(tmp_path: Path) -> None:
    import torch

    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")
    assert not is_torchscript_file(tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a TorchScript archive") as err:
        open_checkpoint(tmp_path / "weights.pt")
    assert "--model-factory" in (err.value.fix or "")


def test_eval_chunks_with_a_state_whose_batch_is_second_and_a_scalar_are_split_and_batched_along_it(
        files: Path, tmp_path: Path) -> None:
    """Issue 20: an .npz carrying the state input crashed with IndexError."""
    from slimline.benchmarking.evaluators.agreement import Agreement
    from slimline.benchmarking.evaluators.base import EvalContext, EvalSource, batch_axes, model_inputs
    from slimline.core.batch_axes import batches

    model = open_checkpoint(files / "stream.onnx")
    chunks = write_eval_chunks(tmp_path / "chunks.npz", count=20)
    out = tmp_path / "prepared.npz"
    facts = Agreement().prepare(EvalSource(source=str(chunks), split="test"), EvalContext(model, model.manifest.inputs),
                                out)
    arrays, _ = model_inputs(out)
    assert facts["examples"] == 2 and arrays["chunk"].shape == (2, 16, 40) and arrays["state"].shape == (2, 2, 64)
    assert arrays["gain"].shape == ()
    with np.load(chunks) as stored:  # the test split's examples, the same rows of every input
        rows = [i for i in range(20) if np.array_equal(stored["chunk"][i], arrays["chunk"][0])]
        assert len(rows) == 1 and np.array_equal(stored["state"][:, rows[0]], arrays["state"][:, 0])
    [first, second] = batches(arrays, 1, batch_axes(out))
    assert first["state"].shape == (2, 1, 64) and first["gain"].shape == () and second["chunk"].shape == (1, 16, 40)


def test_eval_chunks_in_the_wrong_layout_are_refused_naming_the_input(files: Path, tmp_path: Path) -> None:
    from slimline.benchmarking.evaluators.agreement import Agreement
    from slimline.benchmarking.evaluators.base import EvalContext, EvalSource

    model = open_checkpoint(files / "stream.onnx")
    np.savez(tmp_path / "batch-first.npz", chunk=np.zeros((5, 16, 40), np.float32),
             state=np.zeros((5, 2, 64), np.float32), gain=np.float32(1))
    with pytest.raises(DataError, match=r"eval input state .* axis 0 is 5, not 2"):
        Agreement().prepare(EvalSource(source=str(tmp_path / "batch-first.npz")),
                            EvalContext(model, model.manifest.inputs), tmp_path / "out.npz")
