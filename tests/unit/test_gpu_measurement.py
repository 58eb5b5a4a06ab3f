"""GPU measurement logic that runs without a GPU: NVML memory reading (against a fake pynvml), the
gpu_memory_mb budget, the CUDA fp16 baseline choice, TensorRT EP options, phase timings, the spread hint."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from slimline.benchmarking.benchmark import GPU_SPREAD_HINT, spread_warnings
from slimline.benchmarking.budgets import evaluate_budget
from slimline.benchmarking.gpu_memory import GpuMemoryProbe, process_gpu_memory
from slimline.benchmarking.latency import summarize
from slimline.benchmarking.results_model import CandidateResult
from slimline.benchmarking.runners.base import torch_baseline_precision
from slimline.benchmarking.runners.ort_runner import provider_entries
from slimline.benchmarking.runners.trt_runner import TensorRTRunner
from slimline.profiles.schema import Budget

MB = 1024 * 1024


def fake_pynvml(processes: list[list[tuple[int, int | None]]], used_mb: list[float]) -> SimpleNamespace:
    """A stand-in for nvidia-ml-py: per device, its compute processes (pid, bytes) and its used memory."""
    return SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: len(processes),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=p, usedGpuMemory=b)
                                                        for p, b in processes[h]],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=int(used_mb[h] * MB)),
    )


def test_gpu_memory_is_the_process_share_summed_over_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([[(7, 300 * MB), (8, 5000 * MB)], [(7, 212 * MB)]],
                                                           [9000, 4000]))
    measured = process_gpu_memory(pid=7)
    assert measured is not None and (measured.mb, measured.method) == (512.0, "nvml-process")


def test_a_process_nvml_cannot_see_falls_back_to_the_device_delta_only_with_a_baseline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([[(99, 100 * MB)]], [1500]))
    assert process_gpu_memory(pid=7) is None  # never someone else's memory
    measured = process_gpu_memory(pid=7, device_baseline_mb=1000.0)
    assert measured is not None and (measured.mb, measured.method) == (500.0, "nvml-device-delta")


def test_without_nvml_or_cuda_there_is_no_gpu_memory_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert process_gpu_memory() is None
    probe = GpuMemoryProbe()
    if probe.meminfo_baseline_mb is None:  # no CUDA device here either
        assert probe.read() is None


def candidate(gpu_memory_mb: float | None) -> CandidateResult:
    return CandidateResult(label="c", runtime="tensorrt", format="tensorrt", model_dir="/m",
                           latency={"b1_s128": summarize([1.0, 1.1, 1.2], 1)}, size_mb=1.0, peak_rss_mb=1.0,
                           load_s=0.1, gpu_memory_mb=gpu_memory_mb)


def test_the_gpu_memory_budget_reads_the_measured_value() -> None:
    assert evaluate_budget("gpu_memory_mb", Budget(max=1024), candidate(800.0), None).status == "pass"
    failed = evaluate_budget("gpu_memory_mb", Budget(max=1024), candidate(2048.0), None)
    assert (failed.status, failed.measured) == ("fail", 2048.0)
    assert evaluate_budget("gpu_memory_mb", Budget(max=1024), candidate(None), None).status == "not_measured"


def test_the_torch_baseline_is_fp16_only_on_a_cuda_fp16_target() -> None:
    assert torch_baseline_precision("cuda", "fp16") == "fp16"
    assert {torch_baseline_precision(d, p) for d, p in [("cpu", "fp16"), ("cuda", "fp32"), ("cuda", "int8")]} == {
        "fp32"}


def test_tensorrt_ep_gets_fp16_and_engine_caches_and_other_providers_pass_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMLINE_CACHE_DIR", str(tmp_path))
    entries = provider_entries(["TensorrtExecutionProvider", "CUDAExecutionProvider"], "fp16")
    (name, options), cuda = entries
    assert name == "TensorrtExecutionProvider" and cuda == "CUDAExecutionProvider"
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
    assert Path(str(options["trt_engine_cache_path"])).is_dir()
    assert provider_entries(["TensorrtExecutionProvider"], "fp32")[0][1]["trt_fp16_enable"] is False


def test_phase_timings_drop_the_warmup_runs_and_reset() -> None:
    runner = TensorRTRunner.__new__(TensorRTRunner)  # the timing bookkeeping needs no engine
    runner.warmup_iters = 2
    runner.phases = [(50.0, 50.0, 50.0), (40.0, 40.0, 40.0), (0.1, 1.0, 0.05), (0.3, 3.0, 0.15)]
    timings = runner.take_phase_timings()
    assert timings["iterations"] == 2
    assert (timings["h2d"]["mean_ms"], timings["compute"]["mean_ms"], timings["d2h"]["mean_ms"]) == (0.2, 2.0, 0.1)
    assert runner.phases == [] and runner.take_phase_timings() == {}


def test_a_high_spread_on_a_gpu_target_points_at_clocks_and_throttling() -> None:
    noisy = candidate(None).model_copy(update={"latency": {"b1_s128": summarize([1.0, 5.0, 1.0, 9.0], 1)}})
    assert spread_warnings(noisy, 0.1, "cuda")[0].endswith(GPU_SPREAD_HINT)
    assert GPU_SPREAD_HINT not in spread_warnings(noisy, 0.1, "cpu")[0]
