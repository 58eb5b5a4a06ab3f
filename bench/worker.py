"""One benchmark in its own process: load a model, time it at each shape, score it, report peak RSS.

A fresh process per candidate gives each one a clean heap (peak RSS is its own, not the sum of
everything loaded before) and its own thread settings. Invoked as
`python -m slimline.benchmarking.worker SPEC.json RESULT.json`; errors are written to RESULT.json, not raised.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path

from slimline.benchmarking.decode import decode_results
from slimline.benchmarking.evaluators.base import get_evaluator
from slimline.benchmarking.gpu_memory import GpuMemoryProbe
from slimline.benchmarking.latency import sample_latencies_ms, summarize
from slimline.benchmarking.runners import RunnerSpec, make_runner
from slimline.core.errors import SlimlineError
from slimline.core.lifeline import watch_parent
from slimline.formats.inputs import shape_label, synthetic_feeds


def _peak_rss_mb() -> float:
    """This process's resident-set high-water mark.

    VmHWM belongs to the address space created at exec, so it is the worker's own peak; getrusage's
    ru_maxrss survives execve on Linux and would report the parent's (torch-laden) peak instead.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_worker(spec: RunnerSpec) -> dict[str, object]:
    config_path = Path(spec.model_dir) / "config.json"  # a plain PyTorch module's directories have none
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    gpu_memory = GpuMemoryProbe() if spec.device == "cuda" else None  # baselines before the model loads
    started = time.perf_counter()
    runner = make_runner(spec)
    load_s = time.perf_counter() - started
    latency, phases = {}, {}
    for shape in spec.shapes:
        feeds = synthetic_feeds(spec.inputs, shape, config, seed=spec.seed)
        samples = sample_latencies_ms(lambda feeds=feeds: runner.run(feeds), spec.measurement, runner.synchronize)
        label = shape_label(spec.inputs, shape, config)  # b1_s128, b1_3x224x224, b1_t160x40: what it was fed
        latency[label] = summarize(samples, shape.batch_size).model_dump()
        if hasattr(runner, "take_phase_timings"):  # GPU runners: copies and compute timed apart (CUDA events)
            phases[label] = runner.take_phase_timings()
    described = {**runner.describe(), **({"phases_ms": phases} if phases else {})}
    result: dict[str, object] = {"label": spec.label, "runner": described, "load_s": load_s, "latency": latency}
    if spec.task == "text-generation":  # LLMs: prefill (the latency above) and decode with the KV cache apart
        result["decode"] = decode_results(runner, config, spec.shapes, spec.measurement, spec.seed)
    if spec.eval_npz:
        outputs_path = Path(spec.eval_outputs_path) if spec.eval_outputs_path else None
        evaluator = get_evaluator(spec.evaluator)
        forward = getattr(runner, "run_outputs", runner.run) if evaluator.multi_output else runner.run
        score = evaluator.score(forward, Path(spec.eval_npz), spec.eval_batch_size, outputs_path)
        result["eval_score"] = score.model_dump()
        if "accuracy_pct" in score.metrics:
            result["accuracy"] = score.metrics["accuracy_pct"] / 100.0
        result["predictions"] = score.predictions
    result["peak_rss_mb"] = _peak_rss_mb()
    memory = gpu_memory.read() if gpu_memory is not None else None
    if memory is not None:
        result["gpu_memory_mb"] = memory.mb
        described["gpu_memory_method"] = memory.method
    return result


def main(argv: list[str]) -> int:
    watch_parent()
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    try:
        result = run_worker(RunnerSpec.model_validate_json(spec_path.read_text()))
        result_path.write_text(json.dumps(result))
        return 0
    except SlimlineError as err:
        payload = {"error": str(err), "error_type": type(err).__name__, "exit_code": err.exit_code}
    except Exception as err:
        payload = {"error": f"{type(err).__name__}: {err}", "error_type": "BenchError", "exit_code": 3,
                   "traceback": traceback.format_exc()}
    result_path.write_text(json.dumps(payload))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
