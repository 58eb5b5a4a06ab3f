"""Plain PyTorch modules: input specs, safe weight loading, the torch-module directory, export and refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from plain_modules import LSTM_SPEC, write_tiny_cnn

import slimline
from slimline.core.artifact import ModelDir
from slimline.core.errors import CheckpointError, RecipeError
from slimline.formats.torch_module import (
    import_factory,
    load_input_spec,
    load_module,
    load_state_dict,
    module_dir_for,
    spec_from_example,
)


def test_an_input_spec_with_an_unknown_dtype_is_refused_with_an_example() -> None:
    with pytest.raises(CheckpointError, match="dtype 'complex64'"):
        load_input_spec({"inputs": [{"name": "x", "dtype": "complex64", "shape": ["batch", 3]}]})


def test_a_factory_reference_without_a_callable_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"pkg\.module:callable"):
        import_factory("just_a_module")
    with pytest.raises(CheckpointError, match="cannot import"):
        import_factory("no_such_module_xyz:build")


def test_a_pickle_with_code_is_never_unpickled(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # would run on a full unpickle
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(CheckpointError, match=r"weights_only|state dict"):
        load_state_dict(path)


def test_a_module_directory_records_the_factory_and_the_weights_hash_and_is_reused(workdir: Path) -> None:
    weights = write_tiny_cnn(workdir, suffix=".safetensors")
    spec = load_input_spec(workdir / "inputs.yaml")
    model = module_dir_for("tiny_cnn:build", weights, spec)
    meta = model.manifest.metadata
    assert model.manifest.format == "torch-module" and meta["factory"] == "tiny_cnn:build"
    from slimline.core.artifact import sha256_file

    assert meta["weights_sha256"] == sha256_file(weights)
    assert model.manifest.inputs[0].shape == ["batch", 3, 16, 16] and model.manifest.task == "image-classification"
    assert module_dir_for("tiny_cnn:build", weights, spec).path == model.path
    assert load_module(ModelDir.open(model.path)).training is False


def test_weights_that_do_not_fit_the_factory_are_refused_before_any_stage(workdir: Path) -> None:
    import torch

    write_tiny_cnn(workdir)
    torch.save({"other.weight": torch.zeros(2)}, workdir / "wrong.pth")
    with pytest.raises(CheckpointError, match="weights do not fit 'tiny_cnn:build'"):
        module_dir_for("tiny_cnn:build", workdir / "wrong.pth", load_input_spec(workdir / "inputs.yaml"))


def test_an_input_spec_is_derived_from_example_tensors_with_a_dynamic_batch() -> None:
    import torch

    class Net(torch.nn.Module):
        def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return frames * mask

    spec = spec_from_example(Net(), (torch.zeros(1, 1024), torch.ones(1, 1024, dtype=torch.int64)))
    assert [(s.name, s.dtype, s.shape) for s in spec.inputs] == [("frames", "float32", ["batch", 1024]),
                                                                 ("mask", "int64", ["batch", 1024])]


def test_the_module_exports_to_onnx_with_a_dynamic_batch_and_parity(workdir: Path) -> None:
    from slimline.exporters.torch_module import export_torch_module

    weights = write_tiny_cnn(workdir)
    model = module_dir_for("tiny_cnn:build", weights, load_input_spec(workdir / "inputs.yaml"))
    out = workdir / "onnx"
    out.mkdir()
    file, _inputs, outputs, meta = export_torch_module(model, out, "torch", 17, 1e-4, 0.99)
    assert (out / file).is_file() and outputs == ["logits"] and meta["parity"]["max_abs_diff"] < 1e-4
    assert meta["exporter"] == "torch.onnx (torchscript)"
    assert meta["parity"]["examples"] >= 64  # was 4 predictions: 3 + 1 random rows
    from slimline.compression.quantize.ort_common import weight_op_coverage

    coverage = weight_op_coverage(out / file, ["MatMul", "Gemm"])
    assert coverage["weight_ops"] == 3 and "only 1 of 3 weight ops quantized" in coverage["warning"]


def test_a_torch_level_pass_on_a_plain_module_is_refused_with_why_and_the_fix(workdir: Path) -> None:
    from slimline.api import as_profile, as_recipe
    from slimline.pipeline.plan import RunRequest, plan_run

    weights = write_tiny_cnn(workdir)
    model = module_dir_for("tiny_cnn:build", weights, load_input_spec(workdir / "inputs.yaml"))
    request = RunRequest(checkpoint=model.path, profile=as_profile("cpu-vision"), out_dir=workdir / "out",
                         recipe=as_recipe([{"pass": "prune.structured", "with": {"ffn_ratio": 0.5}}]))
    with pytest.raises(RecipeError, match="a plain PyTorch module has none"):
        plan_run(request)
    # `compress` says the same (it said only "accepts ['hf'] models"; found by the coverage matrix)
    with pytest.raises(RecipeError, match="a plain PyTorch module has none"):
        slimline.compress(model.path, recipe=[{"pass": "prune.structured", "with": {"ffn_ratio": 0.5}}],
                          out=workdir / "pruned")
    assert not (workdir / "pruned").exists()


def test_calibrating_on_eval_data_without_eval_data_is_refused_before_any_stage(workdir: Path) -> None:
    from slimline.api import as_profile
    from slimline.pipeline.plan import RunRequest, plan_run

    weights = write_tiny_cnn(workdir)
    model = module_dir_for("tiny_cnn:build", weights, load_input_spec(workdir / "inputs.yaml"))
    with pytest.raises(RecipeError, match="pass --eval-data"):
        plan_run(RunRequest(checkpoint=model.path, profile=as_profile("cpu-vision"), out_dir=workdir / "out"))


def test_a_plain_module_whose_token_input_is_named_input_ids_exports_with_ids_its_embedding_has(
        workdir: Path) -> None:
    """Without a config, `input_ids` were drawn from a guessed 1000-word vocabulary: the LSTM of the coverage matrix
    (64 rows) failed its export's parity check with "index out of range" (exit 3)."""
    import shutil

    import torch
    from conftest import REPO

    shutil.copy(REPO / "tests" / "fixtures" / "tiny_lstm.py", workdir / "tiny_lstm.py")
    (workdir / "inputs.yaml").write_text(LSTM_SPEC)
    from tiny_lstm import VOCAB, build

    assert VOCAB < 1000
    torch.save(build().state_dict(), workdir / "weights.pt")
    model = module_dir_for("tiny_lstm:build", workdir / "weights.pt", load_input_spec(workdir / "inputs.yaml"))
    exported = slimline.export(model.path, out=workdir / "onnx")
    assert exported.manifest.metadata["parity"]["examples"] >= 64
