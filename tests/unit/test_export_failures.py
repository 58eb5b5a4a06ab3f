"""Export failures told apart by cause: an unknown architecture is not an opset problem, a broken import
points at `slimline doctor`, an unsupported operator is named with the opsets to try."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimline.core.errors import CheckpointError, ExportError
from slimline.exporters.failures import export_failure
from slimline.formats.architecture import architecture_problem


def _checkpoint(path: Path, **config: object) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_an_unknown_model_type_is_an_architecture_problem_with_the_plain_module_path(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "pitch", model_type="pitchnet", architectures=["PitchNetForSequenceClassification"])
    problem = architecture_problem(source, "text-classification")
    assert problem is not None
    assert "does not recognize model_type 'pitchnet'" in problem.message
    assert "not an ONNX opset problem" in problem.message
    assert "--model-factory" in problem.fix and "opset" not in problem.fix


def test_custom_code_in_a_checkpoint_is_refused_as_such(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "remote", model_type="mynet", auto_map={"AutoModel": "modeling_mynet.MyNet"})
    problem = architecture_problem(source, "text-classification")
    assert problem is not None and "trust_remote_code" in problem.message


def test_a_known_model_type_without_the_tasks_head_suggests_the_task_it_has(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "vit", model_type="vit", architectures=["ViTModel"])
    problem = architecture_problem(source, "text-generation")
    assert problem is not None and "no AutoModelForCausalLM" in problem.message
    assert problem.fix.startswith("pass --task image-classification")
    assert architecture_problem(source, "image-classification") is None


def test_every_exporter_failing_on_an_unknown_architecture_is_bad_input_not_an_opset_hint(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "pitch", model_type="pitchnet")
    error = export_failure(source, "text-classification", 18,
                           [("optimum", KeyError("pitchnet")), ("torch", ValueError("Unrecognized configuration"))])
    assert isinstance(error, CheckpointError) and error.exit_code == 2
    assert "opset" not in (error.fix or "")


def test_an_unsupported_operator_is_named_with_other_opsets_to_try(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "bert", model_type="bert", architectures=["BertForSequenceClassification"])
    err = RuntimeError("Exporting the operator 'aten::fft_rfft' to ONNX opset version 18 is not supported.")
    error = export_failure(source, "text-classification", 18, [("optimum", ValueError("no config")), ("torch", err)])
    assert isinstance(error, ExportError)
    assert "the operator aten::fft_rfft cannot be exported at opset 18" in str(error)
    assert "--opset 17" in error.fix and "--opset 20" in error.fix


def test_a_broken_import_inside_the_exporter_points_at_doctor(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "bert", model_type="bert", architectures=["BertForSequenceClassification"])
    try:
        try:
            raise RuntimeError("operator torchvision::nms does not exist")
        except RuntimeError as inner:
            raise ModuleNotFoundError("Could not import module 'main_export'") from inner
    except ModuleNotFoundError as outer:
        broken = outer
    error = export_failure(source, "text-classification", 18, [("optimum", broken)])
    assert isinstance(error, ExportError) and "torchvision::nms" in str(error)
    assert "slimline doctor" in error.fix and "opset" not in error.fix


def test_any_other_failure_shows_what_was_raised_without_blaming_the_opset(tmp_path: Path) -> None:
    source = _checkpoint(tmp_path / "bert", model_type="bert", architectures=["BertForSequenceClassification"])
    error = export_failure(source, "text-classification", 18, [("torch", TypeError("forward() got an extra arg"))])
    assert isinstance(error, ExportError) and "TypeError: forward() got an extra arg" in str(error)
    assert "opset" not in error.fix and "-v" in error.fix


@pytest.mark.parametrize("config", [{}, {"model_type": 3}])
def test_an_unreadable_model_type_is_left_to_checkpoint_validation(tmp_path: Path, config: dict) -> None:
    assert architecture_problem(_checkpoint(tmp_path / "odd", **config), "text-classification") is None
