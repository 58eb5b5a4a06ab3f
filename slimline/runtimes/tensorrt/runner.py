"""TensorRT runner: a model.plan from export.tensorrt, run the way an application runs it.

One run() = host-to-device copies of the inputs, execute_async_v3 on a private CUDA stream, a
device-to-host copy of the logits, a stream sync: the wall time the worker measures is what a
caller of run() waits for. CUDA events recorded between those phases time the copies apart from
the compute (take_phase_timings), because trtexec's headline "GPU Compute Time" leaves the copies
and host overhead out and often reads faster than an application sees (TensorRT #4015).

Buffers are torch CUDA tensors (torch's caching allocator reuses them between calls; inputs are
staged through pinned host memory so the H2D event times the DMA), so there is no cuda-python
dependency. The engine's recorded TensorRT version and compute capability are checked before
anything is deserialised (slimline.engine_facts). Not run in CI: it needs a GPU and TensorRT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slimline.core.artifact import ModelDir
from slimline.core.errors import BenchError
from slimline.core.gpu import require_tensorrt
from slimline.formats.engine_facts import REBUILD_HINT, check_engine_compatible, current_engine_facts
from slimline.runtimes.base import RunnerSpec


def _phase_stats(samples: list[float]) -> dict[str, float]:
    values = np.asarray(samples, dtype=np.float64)
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50_ms": round(float(p50), 4), "p95_ms": round(float(p95), 4), "mean_ms": round(float(values.mean()), 4)}


class TensorRTRunner:
    def __init__(self, spec: RunnerSpec) -> None:
        trt = require_tensorrt("the TensorRT runner")
        import torch

        self.trt, self.torch = trt, torch
        manifest = ModelDir.open(spec.model_dir, verify=False).manifest  # the parent process verified the files
        self.facts = current_engine_facts()
        self.warnings = check_engine_compatible(manifest.metadata, self.facts)
        self.precision = manifest.metadata.get("tensorrt", {}).get("precision", "?")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(spec.model_path).read_bytes())
        if self.engine is None:
            raise BenchError(f"TensorRT could not deserialize {spec.model_path} (see its log above).",
                             fix=REBUILD_HINT + ".")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        wanted = manifest.outputs[0] if manifest.outputs else None
        self.output = wanted if wanted in self.output_names else self.output_names[0]
        self.dtypes = {n: torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
                       for n in names}
        self.profile = {n: [tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)] for n in self.input_names}
        self.max_batch = min(shapes[2][0] for shapes in self.profile.values())
        self.device = torch.device("cuda", 0)
        self.stream = torch.cuda.Stream(device=self.device)
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        self.warmup_iters = spec.measurement.warmup_iters
        self.phases: list[tuple[float, float, float]] = []

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        low, _, high = self.profile[name]
        if len(shape) != len(low) or any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)):
            raise BenchError(f"input {name!r} of shape {list(shape)} is outside the engine's optimisation profile "
                             f"(min {list(low)}, max {list(high)}).",
                             fix="rebuild the engine with a profile whose shapes include this one.")

    def _run_once(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        start, inputs_copied, computed, output_copied = self.events
        keep_alive: list[Any] = []
        with torch.cuda.stream(self.stream):
            staged = {}
            for name in self.input_names:
                host = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.dtypes[name])
                self._check_shape(name, tuple(host.shape))
                staged[name] = host.pin_memory()
            start.record(self.stream)
            for name, host in staged.items():
                device_tensor = torch.empty(host.shape, dtype=host.dtype, device=self.device)
                device_tensor.copy_(host, non_blocking=True)
                self.context.set_input_shape(name, tuple(host.shape))
                self.context.set_tensor_address(name, device_tensor.data_ptr())
                keep_alive += [host, device_tensor]
            inputs_copied.record(self.stream)
            outputs = {}
            for name in self.output_names:
                outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name],
                                            device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BenchError("TensorRT's execute_async_v3 failed (see its log above).",
                                 fix="rerun with -v; an engine built on another machine is the usual cause.")
            computed.record(self.stream)
            logits = torch.empty(outputs[self.output].shape, dtype=self.dtypes[self.output], pin_memory=True)
            logits.copy_(outputs[self.output], non_blocking=True)
            output_copied.record(self.stream)
        self.stream.synchronize()
        self.phases.append((start.elapsed_time(inputs_copied), inputs_copied.elapsed_time(computed),
                            computed.elapsed_time(output_copied)))
        return logits.float().numpy()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Batches larger than the engine's maximum (the accuracy run's) go through in engine-sized slices."""
        batch = len(next(iter(feeds.values())))
        if batch <= self.max_batch:
            return self._run_once(feeds)
        parts = [self._run_once({k: v[i : i + self.max_batch] for k, v in feeds.items()})
                 for i in range(0, batch, self.max_batch)]
        return np.concatenate(parts)

    def take_phase_timings(self) -> dict[str, object]:
        """H2D / compute / D2H times (CUDA events) of the runs since the last call, warm-up runs dropped."""
        timed, self.phases = self.phases[self.warmup_iters :], []
        if not timed:
            return {}
        h2d, compute, d2h = (list(column) for column in zip(*timed, strict=True))
        return {"iterations": len(timed), "h2d": _phase_stats(h2d), "compute": _phase_stats(compute),
                "d2h": _phase_stats(d2h)}

    def synchronize(self) -> None:
        self.stream.synchronize()

    def describe(self) -> dict[str, object]:
        return {"runtime": "tensorrt", "version": self.trt.__version__, "precision": self.precision,
                "device": self.facts.gpu_name, "compute_capability": self.facts.compute_capability,
                "timing": "latency = wall time of run(): H2D + compute + D2H + host overhead; phases_ms from CUDA "
                          "events", "warnings": self.warnings}
