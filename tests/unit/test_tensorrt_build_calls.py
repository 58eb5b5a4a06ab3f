"""export_tensorrt against a recording stand-in for the tensorrt module: proves, without a GPU, that the
decisions reach the builder (network mode, flags, workspace, profile shapes, timing cache) and that the
manifest metadata records them. Whether real TensorRT accepts them is for the gpu-marked e2e tests."""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

import slimline.core.gpu
import slimline.formats.engine_facts
from slimline.core.artifact import Manifest, ModelDir, TensorSpec, new_provenance
from slimline.core.errors import ExportError
from slimline.exporters.tensorrt import TensorRTExportConfig, export_tensorrt
from slimline.profiles.schema import Shape

INPUTS = [TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in ("input_ids", "attention_mask")]


def fake_tensorrt(calls: list[tuple[Any, ...]], plan: bytes | None = b"PLAN", cache_ok: bool = True) -> Any:
    class ILogger:
        def __init__(self) -> None:
            pass

    class Config:
        builder_optimization_level = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("pool", pool, size))

        def set_flag(self, flag: str) -> None:
            calls.append(("set_flag", flag))

        def clear_flag(self, flag: str) -> None:
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile: Any) -> None:
            calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data: bytes) -> bytes:
            calls.append(("timing_cache_in", data))
            return data

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
            return cache_ok or cache == b""

        def get_timing_cache(self) -> Any:
            return SimpleNamespace(serialize=lambda: b"TIMINGS")

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
            self.shapes[name] = (low, opt, high)

    network = SimpleNamespace(num_inputs=2, get_input=lambda i: SimpleNamespace(name=INPUTS[i].name))

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Any:
            calls.append(("network_flags", flags))
            return network

        def create_builder_config(self) -> Config:
            self.config = Config()
            return self.config

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, net: Any, config: Config) -> bytes | None:
            calls.append(("optimization_level", config.builder_optimization_level))
            if plan is None:
                self.logger.log(Logger.ERROR, "out of workspace")
            return plan

    class OnnxParser:
        num_errors = 0

        def __init__(self, net: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", Path(path).name))
            return True

    Logger = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)
    module = ModuleType("tensorrt")
    module.__spec__ = ModuleSpec("tensorrt", None)  # importlib.util.find_spec (transformers) reads it
    module.__dict__.update(
        __version__="10.3.0.26", ILogger=ILogger, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32"),
    )
    return module


@pytest.fixture
def onnx_model(tmp_path: Path) -> ModelDir:
    """A graph with the two token inputs; `qdq` variants add a QuantizeLinear node."""
    directory = tmp_path / "onnx"
    directory.mkdir()
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "g",
                              [helper.make_tensor_value_info(s.name, TensorProto.INT64, ["batch", "sequence"])
                               for s in INPUTS],
                              [helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "sequence"])])
    onnx.save(helper.make_model(graph), str(directory / "model.onnx"))
    (directory / "config.json").write_text("{}")
    manifest = Manifest(format="onnx", task="text-classification", model_file="model.onnx", inputs=INPUTS,
                        outputs=["logits"], provenance=new_provenance())
    return ModelDir(directory, manifest)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    recorded: list[tuple[Any, ...]] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(recorded))
    monkeypatch.setattr(slimline.core.gpu, "torch_cuda_problem", lambda: None)
    monkeypatch.setattr(slimline.formats.engine_facts, "cuda_device_facts",
                        lambda index=0: {"name": "NVIDIA A100", "compute_capability": "8.0", "memory_gb": 40.0})
    return recorded


def test_an_fp16_build_sets_the_flag_workspace_profile_and_records_the_engine_facts(
        onnx_model: ModelDir, calls: list, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    out.mkdir()
    config = TensorRTExportConfig(precision="fp16", workspace_mb=256, timing_cache=tmp_path / "t.cache",
                                  builder_optimization_level=4)
    result = export_tensorrt(onnx_model, out, config, [Shape(batch_size=8, sequence_length=128),
                                                       Shape(batch_size=1, sequence_length=64)])
    assert ("network_flags", 0) in calls and ("set_flag", "FP16") in calls and ("pool", "WORKSPACE", 256 << 20) in calls
    assert ("profile", {name: ((1, 1), (8, 128), (8, 128)) for name in ("input_ids", "attention_mask")}) in calls
    assert ("optimization_level", 4) in calls and ("parse", "model.onnx") in calls
    assert (out / "model.plan").read_bytes() == b"PLAN" and (out / "config.json").is_file()
    assert (tmp_path / "t.cache").read_bytes() == b"TIMINGS"
    assert result.metadata["engine"]["tensorrt_version"] == "10.3.0.26"
    assert result.metadata["engine"]["compute_capability"] == "8.0"
    assert result.metadata["tensorrt"]["precision"] == "fp16" and not result.metadata["tensorrt"]["timing_cache_reused"]


def test_a_second_build_reuses_the_timing_cache_the_first_one_saved(onnx_model: ModelDir, calls: list,
                                                                    tmp_path: Path) -> None:
    config = TensorRTExportConfig(timing_cache=tmp_path / "t.cache")
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        result = export_tensorrt(onnx_model, tmp_path / name, config, [Shape()])
    assert ("timing_cache_in", b"TIMINGS") in calls and result.metadata["tensorrt"]["timing_cache_reused"]


def test_a_failed_build_reports_what_tensorrt_logged(onnx_model: ModelDir, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([], plan=None))
    monkeypatch.setattr(slimline.core.gpu, "torch_cuda_problem", lambda: None)
    monkeypatch.setattr(slimline.formats.engine_facts, "cuda_device_facts",
                        lambda index=0: {"name": "GPU", "compute_capability": "8.6", "memory_gb": 1.0})
    with pytest.raises(ExportError, match="out of workspace") as caught:
        export_tensorrt(onnx_model, tmp_path, TensorRTExportConfig(use_timing_cache=False), [Shape()])
    assert "workspace_mb" in str(caught.value)
