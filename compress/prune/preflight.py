"""Pre-flight: does the pruned shape actually run faster on the target? Measured before training.

Fewer parameters do not guarantee less time (Torch-Pruning #149, #84, #382): odd widths fall off
the GEMM kernels' tiles, and pruning what the runtime spends little time on saves nothing. So right
after pruning, and before a distillation pass spends minutes on the student, the unpruned and the
pruned model are timed side by side, interleaved, on the target's runtime and thread count (the
weights do not matter for latency, only the shapes). A warning is logged and recorded when the
estimate is below `warn_below`; `fail_below` stops the run instead.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.compress.base import PassContext
from slimline.core.artifact import ModelDir
from slimline.core.errors import PassError
from slimline.formats.hf import load_hf_model
from slimline.formats.inputs import torch_feeds_for
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
Runner = Callable[[], object]


class PreflightConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    iters: int = Field(default=30, ge=5, description="timed runs per model (interleaved)")
    warn_below: float = Field(default=1.1, gt=0, description="warn when the estimated speed-up is below this")
    fail_below: float | None = Field(default=None, gt=0, description="stop the run below this speed-up")


def run_preflight(pruned: Any, before: dict[str, Any], after: dict[str, Any], model: ModelDir,
                  context: PassContext, config: PreflightConfig) -> dict[str, Any]:
    """Estimate the speed-up of `pruned` over the model at `model.path`; returns facts for the manifest."""
    if not config.enabled:
        return {"skipped": "disabled in the recipe"}
    target = context.target
    original = load_hf_model(model.path, model.manifest.task)
    feeds = torch_feeds_for(original, model, context.shape, seed=context.seed)
    timer = get_runtime(target.runtime).pruning_timer if target.device == "cpu" else None
    if timer == "onnx":
        method = f"onnxruntime CPU, {target.threads} threads, unfused graph"
        with tempfile.TemporaryDirectory(prefix="slimline-preflight-") as scratch:
            runners = [_ort_runner(m, feeds, Path(scratch) / f"{name}.onnx", target.threads)
                       for name, m in (("original", original), ("pruned", pruned))]
            times = _interleaved(runners, config.iters)
    elif timer == "torch":
        method = f"PyTorch eager CPU, {target.threads} threads"
        times = _interleaved([_torch_runner(m, feeds, target.threads) for m in (original, pruned)], config.iters)
    else:
        method = "parameter ratio of the encoder (not measured: this machine cannot run the target)"
        times = [[float(before["parameters"])], [float(after["parameters"])]]
    p50_before, p50_after = (float(np.median(t)) for t in times)
    speedup = p50_before / p50_after
    facts: dict[str, Any] = {"method": method, "shape": context.shape.label(), "p50_ms_before": p50_before,
                             "p50_ms_after": p50_after, "estimated_speedup": round(speedup, 3)}
    if config.fail_below is not None and speedup < config.fail_below:
        raise PassError(f"pre-flight: the pruned shape is estimated only {speedup:.2f}x faster ({method}), below "
                        f"fail_below {config.fail_below}.",
                        fix="prune more (larger ratios, FFN as well as heads, or drop layers), or lower fail_below.")
    if speedup < config.warn_below:
        facts["warning"] = (f"the pruned shape is estimated only {speedup:.2f}x faster on the target ({method}): "
                            "this pruning will likely not cut latency; prune more or target what the runtime "
                            "spends its time on")
        log.warning("pre-flight: %s", facts["warning"])
    else:
        log.info("pre-flight: estimated speed-up %.2fx (%s)", speedup, method)
    return facts


def _interleaved(runners: list[Runner], iters: int) -> list[list[float]]:
    """A, B, A, B...: drifting clocks and neighbours hit both models alike."""
    for run in runners:
        run()
        run()
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(iters):
        for slot, run in zip(times, runners, strict=True):
            start = time.perf_counter()
            run()
            slot.append((time.perf_counter() - start) * 1000.0)
    return times


def _torch_runner(hf_model: Any, feeds: dict[str, Any], threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)

    def run() -> object:
        with torch.inference_mode():
            return hf_model(**feeds)

    return run


def _ort_runner(hf_model: Any, feeds: dict[str, Any], path: Path, threads: int) -> Runner:
    import onnxruntime as ort
    import torch

    names = list(feeds)
    with torch.inference_mode():
        torch.onnx.export(hf_model, (), str(path), kwargs=feeds, input_names=names,
                          output_names=["logits"], opset_version=18, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    numpy_feeds = {n: feeds[n].numpy() for n in names}
    return lambda: session.run(None, numpy_feeds)
