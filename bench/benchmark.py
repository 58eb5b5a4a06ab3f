"""Measure the fp32 baseline and each candidate in the same run, each in its own worker process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.benchmarking.results_model import CandidateResult, pack_correct
from slimline.benchmarking.runners.base import RunnerSpec
from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import BenchError, MissingDependency
from slimline.core.lifeline import child_environment, die_with_parent_preexec
from slimline.core.progress import reporter
from slimline.core.scratch import scratch_directory
from slimline.core.stats import paired_drop_pt
from slimline.profiles.schema import Profile
from slimline.runtimes import get_runtime

WORKER_GRACE_S = 600.0
SPREAD_WARNING = "latency spread is high (cv {cv:.2f} > {max_cv:.2f} at {shape}): the verdict may not be reliable"
GPU_SPREAD_HINT = ("; on a GPU, clock boost and thermal throttling are the usual cause: lock the clocks "
                   "(nvidia-smi --lock-gpu-clocks) or raise warmup_iters, and check that nothing else uses the GPU")


@dataclass(frozen=True)
class Candidate:
    label: str
    model: ModelDir
    runtime: str  # a name in slimline.core.runtime_names


def _spec_for(candidate: Candidate, profile: Profile, inputs: list[TensorSpec], eval_npz: Path | None,
              evaluator: str = "text-classification", outputs_path: Path | None = None) -> RunnerSpec:
    target = profile.target
    return RunnerSpec(
        label=candidate.label, runtime=candidate.runtime, model_path=str(candidate.model.model_path),
        model_dir=str(candidate.model.path), model_format=candidate.model.manifest.format,
        task=candidate.model.manifest.task, device=target.device, precision=target.precision,
        threads=target.threads, providers=get_runtime(candidate.runtime).providers(target),
        runtime_options=dict(target.runtime_options) if candidate.runtime == target.runtime else {},
        inputs=inputs, shapes=profile.shapes, measurement=profile.measurement,
        eval_npz=str(eval_npz) if eval_npz else None, evaluator=evaluator,
        eval_outputs_path=str(outputs_path) if outputs_path else None,
    )


def _worker_timeout_s(profile: Profile) -> float:
    return profile.measurement.max_time_s * len(profile.shapes) + WORKER_GRACE_S


def run_process_group(command: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run `command` in its own process group and kill the whole group if this process is interrupted,
    terminated or times out, so no orphaned worker keeps burning the cores the next measurement needs; if
    this process is killed outright (SIGKILL), the worker dies with it (slimline.core.lifeline)."""
    process = subprocess.Popen(command, env={**env, **child_environment()}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=die_with_parent_preexec())
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_module_worker(module: str, spec_json: str, env: dict[str, str], timeout_s: float, what: str,
                      timeout_fix: str) -> dict:
    """Run `python -m MODULE SPEC.json RESULT.json` in a fresh interpreter (its own process group) and return
    the result dict; a timeout or a worker that died without a result is a BenchError naming `what`."""
    with scratch_directory("slimline-bench-") as scratch:
        spec_path, result_path = scratch / "spec.json", scratch / "result.json"
        spec_path.write_text(spec_json)
        command = [sys.executable, "-m", module, str(spec_path), str(result_path)]
        try:
            completed = run_process_group(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
                                          timeout_s=timeout_s)
        except subprocess.TimeoutExpired as err:
            raise BenchError(f"{what} took longer than {timeout_s:.0f} s.", fix=timeout_fix) from err
        if not result_path.is_file():
            raise BenchError(f"the worker for {what} died (exit {completed.returncode}):\n"
                             f"{completed.stderr[-2000:]}", fix="see the error above; rerun with -v for details.")
        return json.loads(result_path.read_text())


def run_in_worker(spec: RunnerSpec, timeout_s: float) -> dict:
    """Run bench.worker in a fresh interpreter and return its result dict (errors re-raised)."""
    result = run_module_worker("slimline.benchmarking.worker", spec.model_dump_json(),
                               {"OMP_NUM_THREADS": str(spec.threads)}, timeout_s, f"benchmarking {spec.label}",
                               "lower measurement.max_time_s or eval_max_samples in the profile.")
    if "error" in result:
        error_class = MissingDependency if result.get("exit_code") == 2 else BenchError
        raise error_class(f"benchmarking {spec.label} failed: {result['error']}")
    return result


def _to_candidate_result(candidate: Candidate, raw: dict) -> CandidateResult:
    accuracy = raw.get("accuracy")
    return CandidateResult(
        label=candidate.label, runtime=candidate.runtime, format=candidate.model.manifest.format,
        model_dir=str(candidate.model.path), runner=raw["runner"], latency=raw["latency"],
        size_mb=round(candidate.model.size_mb(), 3), peak_rss_mb=round(raw["peak_rss_mb"], 1), load_s=raw["load_s"],
        accuracy_pct=None if accuracy is None else 100.0 * accuracy, gpu_memory_mb=raw.get("gpu_memory_mb"),
        quality=(raw.get("eval_score") or {}).get("metrics", {}), decode=raw.get("decode"),
    )


def _evaluator_comparison(result: CandidateResult, raw: dict, base_raw: dict, evaluator: str,
                          eval_npz: Path | None) -> CandidateResult:
    """The evaluator's metrics vs the baseline (top1_drop_pt, agreement_pct, max_abs_error ...) into `quality`."""
    if eval_npz is None or "eval_score" not in raw or "eval_score" not in base_raw:
        return result
    from slimline.benchmarking.evaluators.base import EvalScore, get_evaluator

    compared = get_evaluator(evaluator).compare(EvalScore.model_validate(raw["eval_score"]),
                                                EvalScore.model_validate(base_raw["eval_score"]), eval_npz)
    updates: dict[str, object] = {"quality": {**result.quality, **compared}}
    if "agreement_pct" in compared:
        updates["agreement_with_baseline_pct"] = compared["agreement_pct"]
    return result.model_copy(update=updates)


def compare_to_baseline(result: CandidateResult, baseline: CandidateResult, predictions: list[int] | None,
                        baseline_predictions: list[int] | None, labels: np.ndarray | None = None) -> CandidateResult:
    alone_speedup = baseline.primary_latency().p50_ms / result.primary_latency().p50_ms
    # Alone until the side-by-side timing replaces speedup_vs_baseline (slimline.pipeline.side_by_side.attach).
    updates: dict[str, object] = {"speedup_vs_baseline": alone_speedup, "speedup_vs_baseline_alone": alone_speedup}
    if result.accuracy_pct is not None and baseline.accuracy_pct is not None:
        updates["accuracy_drop_pt"] = baseline.accuracy_pct - result.accuracy_pct
    mine_decode, base_decode = result.primary_decode(), baseline.primary_decode()
    if mine_decode and base_decode and base_decode["decode_tokens_per_s"] > 0:
        ratio = mine_decode["decode_tokens_per_s"] / base_decode["decode_tokens_per_s"]
        updates["decode_speedup_vs_baseline"] = updates["decode_speedup_vs_baseline_alone"] = ratio
    if predictions is not None and baseline_predictions is not None:
        mine, theirs = np.asarray(predictions), np.asarray(baseline_predictions)
        updates["agreement_with_baseline_pct"] = 100.0 * float(np.mean(mine == theirs))
        if labels is not None:  # same examples for both: the paired error is far smaller than two unpaired ones
            updates["accuracy_drop_se_pt"] = paired_drop_pt(theirs == labels, mine == labels)[1]
    return result.model_copy(update=updates)


def spread_warnings(result: CandidateResult, max_cv: float, device: str = "cpu") -> list[str]:
    hint = GPU_SPREAD_HINT if device == "cuda" else ""
    return [SPREAD_WARNING.format(cv=stats.cv, max_cv=max_cv, shape=shape) + hint
            for shape, stats in result.latency.items() if stats.cv > max_cv]


def measure(candidates: list[Candidate], baseline: Candidate, profile: Profile, inputs: list[TensorSpec],
            eval_npz: Path | None,
            evaluator: str = "text-classification") -> tuple[CandidateResult, list[CandidateResult]]:
    """Baseline first, then each candidate, same inputs, same eval data, same harness.

    `evaluator` names how quality is scored (slimline.benchmarking.evaluators); raw outputs an evaluator keeps
    for its comparison live in a scratch directory until the comparison is done."""
    with scratch_directory("slimline-outputs-") as outputs:
        return _measure(candidates, baseline, profile, inputs, eval_npz, evaluator, outputs)


def _measure(candidates: list[Candidate], baseline: Candidate, profile: Profile, inputs: list[TensorSpec],
             eval_npz: Path | None, evaluator: str, outputs: Path) -> tuple[CandidateResult, list[CandidateResult]]:
    keeps_outputs = False
    if eval_npz is not None:
        from slimline.benchmarking.evaluators.base import get_evaluator

        keeps_outputs = get_evaluator(evaluator).keeps_outputs
    raw_results: list[tuple[Candidate, dict]] = []
    for index, candidate in enumerate([baseline, *candidates]):
        with reporter().step(f"bench: {candidate.label} ({candidate.runtime}) latency + accuracy"):
            outputs_path = outputs / f"{index}.npy" if keeps_outputs else None
            spec = _spec_for(candidate, profile, inputs, eval_npz, evaluator, outputs_path)
            raw_results.append((candidate, run_in_worker(spec, _worker_timeout_s(profile))))
    (base_candidate, base_raw), *rest = raw_results
    labels = None
    if eval_npz is not None:
        with np.load(eval_npz) as arrays:
            labels = arrays["labels"] if "labels" in arrays.files else None
    baseline_result = _to_candidate_result(base_candidate, base_raw)
    baseline_result = baseline_result.model_copy(
        update={"warnings": spread_warnings(baseline_result, profile.measurement.max_cv, profile.target.device),
                "correct_b64": _packed_correct(base_raw, labels)})
    results = []
    for candidate, raw in rest:
        result = compare_to_baseline(_to_candidate_result(candidate, raw), baseline_result,
                                     raw.get("predictions"), base_raw.get("predictions"), labels)
        result = _evaluator_comparison(result, raw, base_raw, evaluator, eval_npz)
        warnings = spread_warnings(result, profile.measurement.max_cv, profile.target.device)
        results.append(result.model_copy(update={"warnings": warnings, "correct_b64": _packed_correct(raw, labels)}))
    return baseline_result, results


def _packed_correct(raw: dict, labels: np.ndarray | None) -> str | None:
    """Per-example correctness for paired comparisons across runs (slimline compare)."""
    predictions = raw.get("predictions")
    if predictions is None or labels is None or len(predictions) != len(labels):
        return None
    return pack_correct(np.asarray(predictions) == labels)
