"""GPU paths end to end: loud refusals (exit 2, what is missing, the install line) where the machine cannot
run them, `slimline doctor` telling the truth, and - on a CUDA machine with TensorRT (marked gpu) - a
real engine built from a tiny exported model, checked against ONNX Runtime and benchmarked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, run_cli

from slimline.core.gpu import tensorrt_problems, torch_cuda_problem

TRT_PROFILES = ["gpu-a100-trt", "jetson-orin-trt"]
no_tensorrt_here = pytest.mark.skipif(not tensorrt_problems(), reason="this machine has TensorRT and a CUDA GPU")
no_cuda_here = pytest.mark.skipif(torch_cuda_problem() is None, reason="torch sees a CUDA device here")


def _one_line(text: str) -> str:
    return " ".join(text.split())


@no_tensorrt_here
@pytest.mark.parametrize("profile", TRT_PROFILES)
def test_a_tensorrt_profile_without_tensorrt_or_cuda_exits_2_with_the_install_line(profile: str, tiny_bert: Path,
                                                                                   tmp_path: Path) -> None:
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", profile, "--out", str(tmp_path / "out"))
    assert completed.returncode == 2, completed.stderr
    message = _one_line(completed.stderr)
    assert "MissingDependency" in message and profile in message
    assert "pip install 'slimline[tensorrt]'" in message and "NVIDIA GPU" in message
    for missing in tensorrt_problems():  # every missing piece is named, not just the first
        assert _one_line(missing.what) in message
    assert not (tmp_path / "out").exists()


@no_cuda_here
def test_doctor_reports_no_cuda_and_how_to_get_each_gpu_runtime() -> None:
    completed = run_cli("doctor")
    assert completed.returncode == 0, completed.stderr
    text = _one_line(completed.stdout)
    for name in ("onnxruntime CUDAExecutionProvider", "torch CUDA", "TensorRT", "NVML"):
        assert name in text
    assert "pip install 'slimline[gpu]'" in text and "pip install 'slimline[tensorrt]'" in text


@no_cuda_here
def test_doctor_json_is_machine_readable_and_says_there_is_no_gpu() -> None:
    completed = run_cli("doctor", "--json")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["cuda_devices"] == [] and report["tensorrt"] is None
    assert not checks["torch CUDA"]["ok"] and checks["torch CUDA"]["fix"]
    assert not checks["TensorRT"]["ok"] and "slimline[tensorrt]" in checks["TensorRT"]["fix"]
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    assert report["versions"]["onnxruntime"] and report["cpu_model"]


# --- on a CUDA machine with TensorRT (skipped elsewhere, with the reason) ---------------------------------

def _engine(tiny_bert: Path, tmp_path: Path, precision: str = "fp32"):
    pytest.importorskip("tensorrt", reason="gpu: the tensorrt module is not installed")
    from slimline.exporters.tensorrt import TENSORRT_EXPORT_STEP, TensorRTExportConfig
    from slimline.pipeline.single import export_to
    from slimline.pipeline.stages import run_stage, tensorrt_producer
    from slimline.profiles.schema import Shape

    onnx_dir = export_to(tiny_bert, tmp_path / "onnx")
    config = TensorRTExportConfig(precision=precision, timing_cache=tmp_path / "timing.cache", workspace_mb=512)
    shapes = [Shape(batch_size=4, sequence_length=16), Shape(batch_size=1, sequence_length=16)]
    engine, _ = run_stage(tmp_path / "run", 1, "exporter", TENSORRT_EXPORT_STEP, config.model_dump(mode="json"),
                          onnx_dir, tensorrt_producer(onnx_dir, config, shapes))
    return onnx_dir, engine, config, shapes


def _runner(engine, shapes):
    from slimline.benchmarking.runners import RunnerSpec, make_runner
    from slimline.profiles.schema import Measurement

    return make_runner(RunnerSpec(label="trt", runtime="tensorrt", model_path=str(engine.model_path),
                                  model_dir=str(engine.path), model_format="tensorrt", task=engine.manifest.task,
                                  device="cuda", inputs=engine.manifest.inputs, shapes=shapes,
                                  measurement=Measurement(warmup_iters=1, min_iters=5, min_time_s=0.0)))


@pytest.mark.gpu
def test_a_tiny_bert_engine_builds_records_its_facts_and_agrees_with_onnx_runtime(tiny_bert: Path,
                                                                                   tmp_path: Path) -> None:
    import onnxruntime as ort

    from slimline.formats.inputs import synthetic_feeds
    from slimline.profiles.schema import Shape

    onnx_dir, engine, _, shapes = _engine(tiny_bert, tmp_path)
    assert engine.manifest.format == "tensorrt" and engine.model_path.name == "model.plan"
    facts = engine.manifest.metadata["engine"]
    assert facts["tensorrt_version"] and facts["compute_capability"] and facts["cuda_version"]
    assert engine.manifest.metadata["tensorrt"]["optimization_profile"]["input_ids"] == [[1, 1], [4, 16], [4, 16]]
    assert (tmp_path / "timing.cache").stat().st_size > 0
    runner = _runner(engine, shapes)
    config = json.loads((engine.path / "config.json").read_text())
    feeds = synthetic_feeds(engine.manifest.inputs, Shape(batch_size=10, sequence_length=16), config)  # > max 4
    session = ort.InferenceSession(str(onnx_dir.model_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)[0]
    np.testing.assert_allclose(runner.run(feeds), expected, atol=1e-3)
    timings = runner.take_phase_timings()
    assert set(timings) == {"iterations", "h2d", "compute", "d2h"}


@pytest.mark.gpu
def test_an_engine_recorded_for_another_tensorrt_release_is_refused_before_loading(tiny_bert: Path,
                                                                                   tmp_path: Path) -> None:
    from slimline.core.artifact import ModelDir
    from slimline.core.errors import CheckpointError

    _, engine, _, shapes = _engine(tiny_bert, tmp_path)
    moved = Path(shutil.copytree(engine.path, tmp_path / "elsewhere"))
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["metadata"]["engine"]["tensorrt_version"] = "8.6.1"
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="rebuild"):
        _runner(ModelDir.open(moved, verify=False), shapes)


@pytest.mark.gpu
def test_run_with_a_tensorrt_profile_benchmarks_the_engine_against_torch_fp16(tiny_bert: Path,
                                                                             tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="gpu: the tensorrt module is not installed")
    profile = yaml.safe_load((REPO / "profiles" / "gpu-a100-trt.yaml").read_text())
    profile.update(name="fast-trt", shapes=[{"batch_size": 4, "sequence_length": 16},
                                           {"batch_size": 1, "sequence_length": 16}],
                   measurement={"warmup_iters": 2, "min_iters": 5, "min_time_s": 0.0, "max_time_s": 5.0},
                   budgets={"latency_p95_ms": {"max": 10000}, "gpu_memory_mb": {"max": 100000}})
    path = tmp_path / "fast-trt.yaml"
    path.write_text(yaml.safe_dump(profile))
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(path), "--out", str(tmp_path / "out"))
    assert completed.returncode in (0, 1), completed.stderr  # 1 only if NVML is absent (gpu memory not measured)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    measured = report["measurements"]
    assert measured["runtime"] == "tensorrt" and measured["runner"]["runtime"] == "tensorrt"
    assert set(measured["runner"]["phases_ms"]) == {"b4_s16", "b1_s16"}
    assert report["baseline"]["label"].startswith("torch fp16")
