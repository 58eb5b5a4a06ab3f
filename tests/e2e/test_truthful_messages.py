"""Messages that tell the truth, through the installed `slimline` script: an unknown architecture is bad
input with its own fix, `doctor` names a broken package that would break export, and a hand-made ONNX
model + manifest is benchmarked against a baseline given with --baseline (bench never says "pass --task")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from slimline.core.errors import CheckpointError

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def unknown_architecture(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint whose config.json names a model_type transformers has never heard of."""
    path = tmp_path_factory.mktemp("pitchnet") / "model"
    shutil.copytree(tiny_bert, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "pitchnet",
                                                  "architectures": ["PitchNetForSequenceClassification"]}))
    return path


def test_an_unknown_architecture_exits_2_with_its_own_fix_not_an_opset_hint(unknown_architecture: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = run_cli("export", "--checkpoint", str(unknown_architecture), "--out", str(out))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    text = _one_line(completed.stderr)
    assert "does not recognize model_type 'pitchnet'" in text and "not an ONNX opset problem" in text
    assert "fix: if it is a plain PyTorch network" in text and "--model-factory" in text
    assert "usual cause" not in text and not out.exists()


def test_run_refuses_an_unknown_architecture_before_any_stage(unknown_architecture: Path, tmp_path: Path) -> None:
    import slimline

    with pytest.raises(CheckpointError, match="does not recognize model_type 'pitchnet'"):
        slimline.run(unknown_architecture, profile=FAST_PROFILE, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _fake_torchvision(site: Path, init: str, files: dict[str, str] | None = None) -> Path:
    """An installed torchvision (it has metadata, so transformers imports it) whose import fails."""
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(init)
    for name, text in (files or {}).items():
        (site / "torchvision" / name).write_text(text)
    (site / "torchvision-0.99.0.dist-info").mkdir()
    (site / "torchvision-0.99.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n")
    return site


def _export_check(completed) -> dict:
    checks = {c["name"]: c for c in json.loads(completed.stdout)["checks"]}
    [check] = [c for name, c in checks.items() if name.startswith("export imports")]
    return check


def test_doctor_names_a_broken_torchvision_that_would_break_export_and_exits_2(tmp_path: Path) -> None:
    """A torchvision built for another torch, faked: failing at import the way a mismatched build does."""
    fake = _fake_torchvision(tmp_path / "site", 'raise RuntimeError("operator torchvision::nms does not exist")\n')
    completed = run_cli("doctor", "--json", env={"PYTHONPATH": str(fake)})
    assert completed.returncode == 2, completed.stderr  # the export stack cannot import: not a healthy machine
    check = _export_check(completed)
    assert not check["ok"] and check["required"]
    assert "operator torchvision::nms does not exist" in check["detail"]
    assert str(fake / "torchvision" / "__init__.py") in check["detail"] and "optimum-onnx exporter" in check["detail"]
    assert check["fix"].startswith("pip uninstall -y torchvision") and "raised in" not in check["detail"]


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_doctor_blames_torchvision_not_torch_when_a_cuda_torchvision_fails_inside_torch(tmp_path: Path) -> None:
    """The real failure of a torchvision wheel built for CUDA beside the CPU torch: its _meta_registrations
    registers a fake kernel for an op its missing extension never defined, and torch/library.py raises. The
    innermost frame is torch's; the package whose import broke is torchvision (issue 20: doctor blamed torch
    and exited 0)."""
    fake = _fake_torchvision(tmp_path / "site", "from torchvision import _meta_registrations\n", {
        "_meta_registrations.py": "import torch\n\n\n@torch.library.register_fake('torchvision::nms')\n"
                                  "def meta_nms(dets, scores, iou_threshold):\n    return dets\n"})
    completed = run_cli("doctor", env={"PYTHONPATH": str(fake)})
    assert completed.returncode == 2, completed.stdout[-2000:]
    text = " ".join(completed.stdout.split())
    assert "broken:" in text and "the package that breaks it is torchvision" in text
    assert "pip uninstall -y torchvision" in text and "pip install --force-reinstall torch" not in text
    assert "operator torchvision::nms does not exist" in text
    assert str(fake / "torchvision" / "_meta_registrations.py") in text
    assert "torch/library.py" in text  # where it was raised, named apart from the culprit


def test_doctor_exits_0_on_a_healthy_export_stack() -> None:
    completed = run_cli("doctor", "--json")
    assert completed.returncode == 0, completed.stdout[-2000:]
    assert _export_check(completed)["ok"]


def _hand_made_onnx(path: Path) -> Path:
    """What a user writes by hand for a network with no config.json: model.onnx + a manifest."""
    import torch

    from slimline.core.artifact import Manifest, TensorSpec, new_provenance, write_manifest

    class Pitch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 8, 9, padding=4)
            self.head = torch.nn.Linear(8 * 64, 16)

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(audio.unsqueeze(1))).flatten(1))

    torch.manual_seed(0)
    path.mkdir()
    torch.onnx.export(Pitch().eval(), (torch.randn(2, 64),), str(path / "model.onnx"), input_names=["audio"],
                      output_names=["logits"], dynamic_axes={"audio": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    write_manifest(path, Manifest(format="onnx", task="tensor", model_file="model.onnx", outputs=["logits"],
                                  inputs=[TensorSpec(name="audio", dtype="float32", shape=["batch", 64])],
                                  provenance=new_provenance()))
    return path


def test_a_hand_made_onnx_model_is_benchmarked_against_the_baseline_given(tmp_path: Path) -> None:
    hand = _hand_made_onnx(tmp_path / "hand")
    alone = run_cli("bench", "--model", str(hand), "--profile", str(FAST_PROFILE), "--out", str(tmp_path / "b0"))
    assert alone.returncode == 2, alone.stdout + alone.stderr
    assert "--baseline" in alone.stderr and "--task" not in alone.stderr

    recipe = tmp_path / "int8.yaml"
    recipe.write_text("- pass: quantize.ort-int8-dynamic\n")
    compressed = run_cli("compress", "--model", str(hand), "--recipe", str(recipe), "--out", str(tmp_path / "int8"))
    assert compressed.returncode == 0, compressed.stdout + compressed.stderr
    out = tmp_path / "bench"
    completed = run_cli("bench", "--model", str(tmp_path / "int8"), "--baseline", str(hand),
                        "--profile", str(FAST_PROFILE), "--out", str(out))
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["runtime"] == "onnxruntime" and "hand" in report["baseline"]["label"]
    assert report["measurements"]["runtime"] == "onnxruntime"
    assert report["speedup_vs_baseline"] is not None and report["measurements"]["latency"]
