"""Build a serialized TensorRT engine (model.plan) from an ONNX model directory, through the TensorRT Python API.

The decisions (precision flags, optimisation profile, compatibility) live in export/tensorrt_plan.py
and are tested on CPU; this module applies them with TensorRT 10's API: Builder, create_network
(STRONGLY_TYPED for explicit-Q/DQ int8), OnnxParser.parse_from_file, IBuilderConfig (workspace pool
limit, builder flags, optimisation level, timing cache), build_serialized_network. The engine's
manifest records the TensorRT / CUDA / driver versions and the GPU's compute capability, which the
TensorRT runner checks before it deserialises anything.

Not run in CI: no GPU and no TensorRT wheel are available there (tests marked `gpu` cover it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from slimline.core.artifact import ModelDir
from slimline.core.errors import ExportError
from slimline.core.gpu import require_tensorrt
from slimline.exporters.onnx import SIDE_FILE_PATTERNS, ExportResult
from slimline.exporters.tensorrt_plan import (
    BuilderPlan,
    TensorRTExportConfig,
    default_timing_cache_dir,
    optimization_profile_shapes,
    select_builder_flags,
)
from slimline.formats.engine_facts import EngineFacts, check_engine_compatible, current_engine_facts
from slimline.profiles.schema import Shape

log = logging.getLogger(__name__)
ENGINE_FILE = "model.plan"
TENSORRT_EXPORT_STEP = "export.tensorrt"

__all__ = ["ENGINE_FILE", "TENSORRT_EXPORT_STEP", "BuilderPlan", "EngineFacts", "TensorRTExportConfig",
           "check_engine_compatible", "current_engine_facts", "export_tensorrt", "onnx_has_qdq",
           "optimization_profile_shapes", "require_tensorrt", "select_builder_flags"]


def onnx_has_qdq(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


def _logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to `logging` and keeps the errors for the ExportError message."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:  # must not raise: TensorRT calls it from C++
            if severity in (trt.Logger.INTERNAL_ERROR, trt.Logger.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.Logger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return CapturingLogger()


def _timing_cache_path(config: TensorRTExportConfig, facts: EngineFacts) -> Path | None:
    """A timing cache holds per-GPU, per-TensorRT-release kernel timings: one file per pair."""
    if not config.use_timing_cache:
        return None
    if config.timing_cache is not None:
        return config.timing_cache
    gpu = "".join(c if c.isalnum() else "-" for c in (facts.gpu_name or "gpu"))
    return default_timing_cache_dir() / f"timing-trt{facts.tensorrt_version}-sm{facts.compute_capability}-{gpu}.cache"


def _attach_timing_cache(builder_config: Any, path: Path | None) -> bool:
    """Load the cache into the builder config; True when a previous build's timings were reused."""
    if path is None:
        return False
    cached = path.read_bytes() if path.is_file() else b""
    cache = builder_config.create_timing_cache(cached)
    if builder_config.set_timing_cache(cache, ignore_mismatch=False):
        return bool(cached)
    log.warning("TensorRT refused the timing cache %s (built for another GPU or release); starting empty", path)
    builder_config.set_timing_cache(builder_config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def _save_timing_cache(builder_config: Any, path: Path | None) -> None:
    """Written atomically: two builds finishing together must not leave a torn cache."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes(builder_config.get_timing_cache().serialize())
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, path)


def _parse_onnx(trt: Any, logger: Any, onnx_path: Path, plan: BuilderPlan) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weights resolve
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  {errors}",
                          fix="an op TensorRT does not support is the usual cause: keep it out of the graph "
                              "(another opset, or skip the pass that introduced it).")
    return builder, network, parser


def _configure(trt: Any, builder: Any, network: Any, config: TensorRTExportConfig, plan: BuilderPlan,
               profile_shapes: dict[str, Any]) -> Any:
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    builder_config.builder_optimization_level = config.builder_optimization_level
    for flag in (*plan.set_flags, *plan.clear_flags):
        if not hasattr(trt.BuilderFlag, flag):  # TensorRT 11 dropped the precision flags (strong typing only)
            raise ExportError(f"TensorRT {trt.__version__} has no BuilderFlag.{flag}, which precision "
                              f"{plan.precision} needs.", fix="install TensorRT 10 (pip install 'tensorrt>=10,<11').")
    for flag in plan.set_flags:
        builder_config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        builder_config.clear_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in profile_shapes:
            raise ExportError(f"the ONNX graph has input {name!r}, which the model directory's manifest does not "
                              "list, so no optimisation profile can be derived for it.",
                              fix="re-export the model so its manifest lists every graph input.")
        low, opt, high = profile_shapes[name]
        profile.set_shape(name, low, opt, high)
    builder_config.add_optimization_profile(profile)
    return builder_config


def _copy_side_files(source: Path, out_dir: Path) -> None:
    for pattern in SIDE_FILE_PATTERNS:
        for path in source.glob(pattern):
            if path.is_file() and path.suffix != ".onnx":
                shutil.copy2(path, out_dir / path.name)


def export_tensorrt(model: ModelDir, out_dir: Path, config: TensorRTExportConfig, shapes: list[Shape]) -> ExportResult:
    """Build `model` (format onnx) into `out_dir/model.plan` for this machine's GPU."""
    if model.manifest.format != "onnx":
        raise ExportError(f"the TensorRT export takes an ONNX model directory, got format {model.manifest.format}.",
                          fix="export to ONNX first (the pipeline does this for runtime tensorrt).")
    trt = require_tensorrt("the TensorRT export")
    facts = current_engine_facts()
    model_config_path = model.path / "config.json"
    model_config = json.loads(model_config_path.read_text()) if model_config_path.is_file() else {}
    plan = select_builder_flags(config.precision, onnx_has_qdq(model.model_path), facts.compute_capability)
    profile_shapes = optimization_profile_shapes(model.manifest.inputs, shapes, model_config)
    logger = _logger(trt)
    builder, network, _parser = _parse_onnx(trt, logger, model.model_path, plan)
    builder_config = _configure(trt, builder, network, config, plan, profile_shapes)
    cache_path = _timing_cache_path(config, facts)
    reused = _attach_timing_cache(builder_config, cache_path)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, builder_config)
    build_s = time.perf_counter() - started
    if serialized is None:
        errors = "\n  ".join(logger.errors[-10:]) or "(TensorRT logged no error)"
        raise ExportError(f"TensorRT could not build an engine from {model.model_path}:\n  {errors}",
                          fix="raise workspace_mb if a tactic ran out of memory, or try precision fp32 to see "
                              "whether a reduced-precision layer is the cause.")
    (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
    _save_timing_cache(builder_config, cache_path)
    _copy_side_files(model.path, out_dir)
    return ExportResult(
        model_file=ENGINE_FILE, inputs=model.manifest.inputs, outputs=model.manifest.outputs,
        metadata={
            "engine": facts.model_dump(),
            "tensorrt": {"precision": plan.precision, "strongly_typed": plan.strongly_typed,
                         "set_flags": list(plan.set_flags), "clear_flags": list(plan.clear_flags),
                         "notes": list(plan.notes), "workspace_mb": config.workspace_mb,
                         "builder_optimization_level": config.builder_optimization_level,
                         "optimization_profile": {k: [list(s) for s in v] for k, v in profile_shapes.items()},
                         "timing_cache": str(cache_path) if cache_path else None, "timing_cache_reused": reused,
                         "build_s": round(build_s, 2)},
            "engine_size_mb": round((out_dir / ENGINE_FILE).stat().st_size / 1e6, 3),
        },
    )


class TensorRTEngineExporter:
    """export.tensorrt as the tensorrt runtime's engine exporter (slimline.runtimes.tensorrt)."""

    step = TENSORRT_EXPORT_STEP

    def config(self, target: Any, override: Any = None) -> TensorRTExportConfig:
        return override or TensorRTExportConfig.for_target_precision(target.precision)  # int4: no build (exit 2)

    def context_key(self, target: Any, shapes: list[Shape]) -> dict[str, Any]:
        """An engine depends on the shapes and on the GPU and TensorRT release it was built on: a rerun
        elsewhere rebuilds instead of reusing an engine this machine cannot load (a driver update does not)."""
        engine = current_engine_facts().model_dump(include={"tensorrt_version", "compute_capability", "gpu_name"})
        return {"shapes": [s.model_dump() for s in shapes], "engine": engine}

    def build(self, model: ModelDir, out_dir: Path, config: Any, shapes: list[Shape]) -> ExportResult:
        return export_tensorrt(model, out_dir, config, shapes)


ENGINE_EXPORTER = TensorRTEngineExporter()
