"""Pre-flight: does the pruned model actually run faster? Measured right after pruning, before any training.

Fewer parameters do not guarantee less time (Torch-Pruning #149, #84, #382): odd widths fall off the
GEMM kernels' tiles, and pruning what the runtime spends little time on saves nothing. So the unpruned
and the pruned model are timed side by side on this machine, round-robin (one call of each per round,
in a shuffled order, so a busy moment hits both alike), on ONNX Runtime when the target is ONNX Runtime
on CPU and in PyTorch otherwise (on the GPU for a CUDA target when this machine has one), at the target's
thread count. The speed-up is the median of the per-round ratios, with its distribution-free 95% interval
(the spread). The pruned model being slower beyond that spread stops the run (`refuse_if_slower`), an
estimate below `warn_below` is a warning, and `fail_below` is a harder floor of the user's choosing. A
CUDA target timed on this machine's CPU (no GPU here) is a proxy: it warns, it never stops the run. The
numbers go into the manifest.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.compression.base import PassContext
from slimline.core.artifact import ModelDir
from slimline.core.errors import PassError
from slimline.core.stats import median_ci
from slimline.core.timing import round_robin_ms
from slimline.formats.hf import load_hf_model
from slimline.formats.inputs import torch_feeds_for
from slimline.runtimes import get_runtime

log = logging.getLogger(__name__)
Runner = Callable[[], object]
#: Tasks whose models export with a plain torch.onnx call of their forward (a decoder needs its KV cache).
ORT_TIMED_TASKS = frozenset({"text-classification", "image-classification", "feature-extraction"})


class PreflightConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    iters: int = Field(default=30, ge=5, description="rounds of one call per model (interleaved, shuffled)")
    max_time_s: float = Field(default=30.0, gt=0, description="stop timing after this long (5 rounds at least)")
    warn_below: float = Field(default=1.1, gt=0, description="warn when the estimated speed-up is below this")
    fail_below: float | None = Field(default=None, gt=0, description="stop the run below this speed-up")
    refuse_if_slower: bool = Field(default=True, description="stop the run when the pruned model is slower beyond "
                                                             "the spread of the measurement")


def run_preflight(pruned: Any, model: ModelDir, context: PassContext, config: PreflightConfig,
                  parameters_before: int) -> dict[str, Any]:
    """Time `pruned` against the model at `model.path`; returns facts for the manifest, or raises PassError."""
    if not config.enabled:
        return {"skipped": "disabled in the recipe"}
    import torch

    target = context.target
    original = load_hf_model(model.path, model.manifest.task)
    feeds = torch_feeds_for(original, model, context.shape, seed=context.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    try:
        method, samples, rounds = _measure(original, pruned, feeds, model.manifest.task, target, config)
    finally:
        torch.set_num_threads(previous_threads)
        pruned.to("cpu")
    proxy = target.device == "cuda" and "CUDA" not in method
    before, after = (np.asarray(s) for s in samples)
    ratios = before / after
    speedup = float(np.median(ratios))
    low, high = median_ci(ratios)
    facts: dict[str, Any] = {
        "method": method, "shape": context.shape.label(), "rounds": rounds,
        "p50_ms_before": round(float(np.median(before)), 4), "p50_ms_after": round(float(np.median(after)), 4),
        "estimated_speedup": round(speedup, 3), "speedup_ci95": [round(low, 3), round(high, 3)],
        "parameters_before": parameters_before,
        "parameters_after": int(sum(p.numel() for p in pruned.parameters()))}
    if proxy:
        facts["note"] = "the target is a CUDA device and this machine has none: timed on its CPU as a proxy"
    if config.refuse_if_slower and high < 1.0 and not proxy:
        raise PassError(f"pre-flight: the pruned model is slower than the original beyond the spread of the "
                        f"measurement (speed-up {speedup:.2f}x, 95% interval {low:.2f}-{high:.2f}, {rounds} "
                        f"interleaved rounds, {method}): pruning would cost accuracy and buy no speed.",
                        fix="prune more (larger ratios, FFN as well as heads, or drop layers), keep widths multiples "
                            "of 8, or set preflight.refuse_if_slower: false to keep it anyway.")
    if config.fail_below is not None and speedup < config.fail_below and not proxy:
        raise PassError(f"pre-flight: the pruned shape is estimated only {speedup:.2f}x faster ({method}), below "
                        f"fail_below {config.fail_below}.",
                        fix="prune more (larger ratios, FFN as well as heads, or drop layers), or lower fail_below.")
    if speedup < config.warn_below:
        facts["warning"] = (f"the pruned shape is estimated only {speedup:.2f}x faster on this machine ({method}, "
                            f"95% interval {low:.2f}-{high:.2f}): this pruning will likely not cut latency; prune "
                            "more or target what the runtime spends its time on")
        log.warning("pre-flight: %s", facts["warning"])
    else:
        log.info("pre-flight: estimated speed-up %.2fx (%.2f-%.2f, %s)", speedup, low, high, method)
    return facts


def _measure(original: Any, pruned: Any, feeds: dict[str, Any], task: str, target: Any,
             config: PreflightConfig) -> tuple[str, list[list[float]], int]:
    timing = {"min_rounds": config.iters, "min_time_s": 0.2, "max_time_s": config.max_time_s, "warmup_iters": 2}
    if target.device == "cpu" and get_runtime(target.runtime).pruning_timer == "onnx" and task in ORT_TIMED_TASKS:
        with tempfile.TemporaryDirectory(prefix="slimline-preflight-") as scratch:
            try:
                runners = [_ort_runner(m, feeds, Path(scratch) / f"{name}.onnx", target.threads)
                           for name, m in (("original", original), ("pruned", pruned))]
            except Exception as err:  # torch.onnx raises many types; the torch timing still answers the question
                log.warning("pre-flight: ONNX export for timing failed (%s); timing in PyTorch instead", err)
            else:
                samples, rounds = round_robin_ms(runners, **timing)
                return f"onnxruntime CPU, {target.threads} threads, unfused graph", samples, rounds
    import torch

    if target.device == "cuda" and torch.cuda.is_available():
        models = [m.to("cuda") for m in (original, pruned)]
        on_device = {name: value.to("cuda") for name, value in feeds.items()}
        samples, rounds = round_robin_ms([_torch_runner(m, on_device, cuda=True) for m in models], **timing)
        return f"PyTorch eager on this machine's CUDA device ({torch.cuda.get_device_name()})", samples, rounds
    samples, rounds = round_robin_ms([_torch_runner(m, feeds) for m in (original, pruned)], **timing)
    return f"PyTorch eager on this machine's CPU, {target.threads} threads", samples, rounds


def _torch_runner(hf_model: Any, feeds: dict[str, Any], cuda: bool = False) -> Runner:
    import torch

    def run() -> object:
        with torch.inference_mode():
            output = hf_model(**feeds)
        if cuda:  # the call returns before the GPU is done: time the work, not the launch
            torch.cuda.synchronize()
        return output

    return run


def _ort_runner(hf_model: Any, feeds: dict[str, Any], path: Path, threads: int) -> Runner:
    import onnxruntime as ort
    import torch

    names = list(feeds)
    with torch.inference_mode():
        torch.onnx.export(hf_model, (), str(path), kwargs=feeds, input_names=names,
                          output_names=["output"], opset_version=18, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    numpy_feeds = {n: feeds[n].numpy() for n in names if n in graph_inputs}
    return lambda: session.run(None, numpy_feeds)
