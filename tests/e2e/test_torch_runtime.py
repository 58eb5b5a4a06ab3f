"""`slimline run` on a PyTorch-runtime profile: torch dynamic int8, no export, benchmarked by the torch runner."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import REPO, run_cli

TORCH_INT8 = "quantize.torch-int8-dynamic"


def _fast_torch_profile(tmp_path: Path, recipe: list[dict]) -> Path:
    """The fast-cpu fixture's measurement settings, on the torch runtime."""
    profile = yaml.safe_load((REPO / "tests" / "fixtures" / "fast-cpu.yaml").read_text())
    profile.update(name="fast-torch", description="test profile - torch runtime, very short measurement",
                   recipe=recipe)
    profile["target"] = {"device": "cpu", "runtime": "torch", "threads": 1, "precision": "int8"}
    path = tmp_path / "fast-torch.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_a_torch_runtime_run_quantizes_without_export_and_reports_the_scheme(tiny_bert: Path, labelled_csv: Path,
                                                                              tmp_path: Path) -> None:
    profile = _fast_torch_profile(tmp_path, [{"pass": TORCH_INT8, "with": {"per_channel": True}}])
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(profile), "--out", str(out),
                        "--eval-data", str(labelled_csv))
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == ("pass" if completed.returncode == 0 else "fail")
    assert [(s["kind"], s["name"]) for s in report["stages"]] == [("pass", TORCH_INT8)]
    assert report["baseline"]["runtime"] == "torch" and report["baseline"]["runner"]["quantization"] == "none"
    final = report["measurements"]
    assert (final["runtime"], final["format"]) == ("torch", "torch-quantized")
    assert final["runner"]["quantization"] == "torch-int8-dynamic"
    assert final["accuracy_pct"] is not None and isinstance(report["accuracy_drop_pt"], float)
    assert 0 < final["size_mb"] < report["baseline"]["size_mb"]
    stage_dir = Path(report["stages"][0]["directory"])
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["format"] == "torch-quantized" and manifest["model_file"] == "model.safetensors"
    assert manifest["metadata"]["quantization"]["scheme"] == "torch-int8-dynamic"
    assert not any(stage_dir.parent.glob("*export.onnx*"))


def test_bitsandbytes_on_an_onnxruntime_profile_exits_two_citing_optimum_1914(tiny_bert: Path,
                                                                                tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- pass: quantize.bnb-nf4\n")
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(REPO / "tests" / "fixtures" /
                        "fast-cpu.yaml"), "--out", str(out), "--recipe", str(recipe))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "optimum #1914" in completed.stderr
    assert not (out / "stages").exists()
