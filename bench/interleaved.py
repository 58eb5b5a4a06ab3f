"""Several models timed side by side in one worker process: blocks of iterations, shuffled each round.

The scheme and why it is unbiased: slimline.core.timing. Each runtime keeps its own threading defaults
(PyTorch's OpenMP waits as it ships, ONNX Runtime's pool spinning as it ships): the iterations a switch
between models disturbs are the first of each block, and those are dropped. `threading="passive"`
(OMP_WAIT_POLICY=PASSIVE, ONNX Runtime not spinning) and one iteration per round
(`InterleavedTiming.one_iteration_per_round`) reproduce the old scheme for the bias benchmark
(benchmarks/interleaving_bias_cpu.py).

Decoder LLMs are also decoded side by side: one iteration is a whole greedy generation from the KV
cache, whose prefill time and decode tokens/s are the samples.

Invoked as `python -m slimline.benchmarking.interleaved SPECS.json RESULT.json`, or through `time_interleaved`.
The worker returns every kept sample by round; slimline.benchmarking.interleaved_stats turns them into figures
with intervals over rounds.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.benchmarking.benchmark import run_module_worker
from slimline.benchmarking.decode import MIN_DECODE_RUNS, decoder_for, prompt_for
from slimline.benchmarking.latency import LatencyStats, summarize_rounds
from slimline.benchmarking.runners import Runner, RunnerSpec, make_runner
from slimline.core.errors import BenchError
from slimline.core.lifeline import watch_parent
from slimline.core.timing import BlockRounds, interleave_blocks, timed_ms
from slimline.formats.causal_lm import greedy_generate
from slimline.formats.inputs import synthetic_feeds
from slimline.profiles.schema import Measurement, Shape


class InterleavedTiming(BaseModel):
    """How long side-by-side timing runs: `warmup_iters` per model, then rounds of one block per model, until
    at least `min_rounds` rounds, `min_iters` kept samples of every model AND `min_time_s`; capped at
    `max_time_s` (after 5 rounds at least). A block lasts about `block_s` (`min_block_iters` to
    `max_block_iters` kept iterations) after `block_warmup_iters` dropped ones (only while they fit in
    `max_block_warmup_s`: see slimline.core.timing.block_plan)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup_iters: int = Field(default=10, ge=0)
    min_iters: int = Field(default=50, ge=1)
    min_rounds: int = Field(default=10, ge=1)
    min_time_s: float = Field(default=5.0, ge=0)
    max_time_s: float = Field(default=60.0, gt=0)
    block_s: float = Field(default=0.1, ge=0)
    block_warmup_iters: int = Field(default=2, ge=0)
    max_block_warmup_s: float = Field(default=0.05, ge=0)
    min_block_iters: int = Field(default=3, ge=1)
    max_block_iters: int = Field(default=20, ge=1)

    @classmethod
    def of(cls, measurement: Measurement) -> InterleavedTiming:
        """The profile's own bench settings (warm-up, samples per model, time) in blocks."""
        return cls(warmup_iters=measurement.warmup_iters, min_iters=measurement.min_iters,
                   min_time_s=measurement.min_time_s, max_time_s=measurement.max_time_s)

    @classmethod
    def decode_of(cls, measurement: Measurement) -> InterleavedTiming:
        """Greedy generations side by side: a generation is one iteration (at least MIN_DECODE_RUNS per model,
        5 rounds); a block fills half a second, so a slow model decodes once per round."""
        return cls(warmup_iters=min(measurement.warmup_iters, 2), min_iters=MIN_DECODE_RUNS, min_rounds=5,
                   min_time_s=measurement.min_time_s, max_time_s=measurement.max_time_s, block_s=0.5,
                   block_warmup_iters=1, max_block_warmup_s=0.05, min_block_iters=1, max_block_iters=10)

    def at_most(self, **caps: float) -> InterleavedTiming:
        """Each named setting lowered to its cap (a shorter timing, e.g. to screen search trials)."""
        return self.model_copy(update={name: min(getattr(self, name), cap) for name, cap in caps.items()})

    def one_iteration_per_round(self) -> InterleavedTiming:
        """The old round-robin: one iteration of each model per round, nothing dropped (bias benchmark only)."""
        return self.model_copy(update={"block_s": 0.0, "block_warmup_iters": 0, "min_block_iters": 1,
                                       "max_block_iters": 1, "min_rounds": max(self.min_rounds, self.min_iters)})


class InterleavedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runners: list[RunnerSpec] = Field(min_length=1)
    shape: Shape
    timing: InterleavedTiming = Field(default_factory=InterleavedTiming)
    #: Text-generation models: also decode side by side (None: latency only).
    decode: InterleavedTiming | None = None
    decode_tokens: int = Field(default=64, ge=2)
    #: "runtime-defaults": each runtime's own threading. "passive": OMP_WAIT_POLICY=PASSIVE and ONNX Runtime
    #: pools that do not spin (the old scheme's waits). "auto": passive when other processes keep the cores busy,
    #: else runtime-defaults (slimline.core.contention; measurement.side_by_side_threading).
    threading: Literal["auto", "runtime-defaults", "passive"] = "runtime-defaults"
    #: ONNX Runtime's intra-op pool spinning while idle; None: its default (spinning) unless threading="passive".
    ort_spinning: bool | None = None
    seed: int = 0


class DecodeRounds(BaseModel):
    """Per round, the kept generations of one model: prefill ms and decode tokens/s of each."""

    prompt_tokens: int
    new_tokens: int
    batch_size: int
    prefill_ms: list[list[float]]
    tokens_per_s: list[list[float]]


class InterleavedResult(BaseModel):
    rounds: int
    seconds: float
    #: Per label, per round: the kept iterations' wall times in ms.
    samples_ms: dict[str, list[list[float]]]
    #: Per label: iterations dropped at the start of each block, iterations kept.
    blocks: dict[str, tuple[int, int]]
    batch_size: int
    threading: str
    #: Why this threading (threading "auto": what the contention probe saw before the timing).
    threading_reason: str | None = None
    decode: dict[str, DecodeRounds] | None = None
    decode_rounds: int | None = None
    decode_seconds: float | None = None
    #: Per label: why it was not decoded side by side (an export without a KV cache).
    decode_skipped: dict[str, str] = Field(default_factory=dict)

    def latency_stats(self, seed: int = 0) -> dict[str, LatencyStats]:
        """Each model's pooled kept samples, summarised, with intervals from resampled rounds."""
        return {label: summarize_rounds(rounds, self.batch_size, seed) for label, rounds in self.samples_ms.items()}


def _spinning(spec: InterleavedSpec) -> bool:
    return spec.ort_spinning if spec.ort_spinning is not None else spec.threading != "passive"


def _load(spec: InterleavedSpec) -> tuple[list[Runner], list[dict[str, Any]]]:
    runners, configs = [], []
    for runner_spec in spec.runners:
        config_path = Path(runner_spec.model_dir) / "config.json"
        configs.append(json.loads(config_path.read_text()) if config_path.is_file() else {})
        runners.append(make_runner(runner_spec.model_copy(update={"allow_spinning": _spinning(spec)})))
    return runners, configs


def _latency_rounds(spec: InterleavedSpec, runners: list[Runner], configs: list[dict[str, Any]]) -> BlockRounds:
    def one_run(runner: Runner, feed: dict[str, np.ndarray]) -> Callable[[], float]:
        def run() -> None:
            runner.run(feed)
            runner.synchronize()
        return timed_ms(run)

    feeds = [synthetic_feeds(s.inputs, spec.shape, config, seed=spec.seed) for s, config in zip(spec.runners, configs,
                                                                                                  strict=True)]
    return interleave_blocks([one_run(r, f) for r, f in zip(runners, feeds, strict=True)], seed=spec.seed,
                             **spec.timing.model_dump())


def _decode_rounds(spec: InterleavedSpec, runners: list[Runner], configs: list[dict[str, Any]],
                   result: dict[str, Any]) -> None:
    """Greedy generations side by side, for the text-generation models that can decode from a cache."""
    if spec.decode is None:
        return
    decoders, labels, prompts = [], [], []
    for runner_spec, runner, config in zip(spec.runners, runners, configs, strict=True):
        if runner_spec.task != "text-generation":
            continue
        decoder = decoder_for(runner, config)
        if decoder is None:
            result["decode_skipped"][runner_spec.label] = "exported without a KV cache: no decode loop to time"
            continue
        decoders.append(decoder)
        labels.append(runner_spec.label)
        prompts.append(prompt_for(spec.shape, config, spec.seed))
    if not decoders:
        return

    def one_generation(decoder: Any, prompt: np.ndarray) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            generation = greedy_generate(decoder, prompt, None, spec.decode_tokens)
            return generation.prefill_ms, generation.decode_tokens_per_s()
        return run

    timing = spec.decode
    measured = interleave_blocks([one_generation(d, p) for d, p in zip(decoders, prompts, strict=True)],
                                 seed=spec.seed + 1, **timing.model_dump())
    result["decode"] = {label: DecodeRounds(
        prompt_tokens=int(prompt.shape[1]), new_tokens=spec.decode_tokens, batch_size=int(prompt.shape[0]),
        prefill_ms=[[sample[0] for sample in block] for block in measured.rounds[index]],
        tokens_per_s=[[sample[1] for sample in block] for block in measured.rounds[index]]).model_dump()
        for index, (label, prompt) in enumerate(zip(labels, prompts, strict=True))}
    result["decode_rounds"], result["decode_seconds"] = measured.round_count, round(measured.seconds, 2)


def measure_interleaved(spec: InterleavedSpec) -> InterleavedResult:
    """Load every model, then time them side by side in blocks (and decode them side by side, for LLMs)."""
    runners, configs = _load(spec)
    measured = _latency_rounds(spec, runners, configs)
    labels = [s.label for s in spec.runners]
    result: dict[str, Any] = {
        "rounds": measured.round_count, "seconds": round(measured.seconds, 2),
        "samples_ms": {label: measured.rounds[i] for i, label in enumerate(labels)},
        "blocks": {label: (plan.dropped, plan.kept) for label, plan in zip(labels, measured.plans, strict=True)},
        "batch_size": spec.shape.batch_size, "threading": spec.threading, "decode_skipped": {}}
    _decode_rounds(spec, runners, configs, result)
    return InterleavedResult.model_validate(result)


def worker_env(spec: InterleavedSpec) -> dict[str, str]:
    """The target's thread count; OpenMP's wait policy only for the old scheme (it must be set before torch
    loads, hence the worker process)."""
    env = {"OMP_NUM_THREADS": str(spec.runners[0].threads)}
    if spec.threading == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def resolve_threading(spec: InterleavedSpec) -> tuple[InterleavedSpec, str | None]:
    """threading "auto" made concrete by measuring what other processes take now (slimline.core.contention)."""
    if spec.threading != "auto":
        return spec, None
    from slimline.core.contention import measure_contention

    seen = measure_contention()
    if seen is None:
        return spec.model_copy(update={"threading": "runtime-defaults"}), \
            "auto: the CPU's use by others cannot be read here; each runtime's defaults"
    if seen.busy:
        return spec.model_copy(update={"threading": "passive"}), \
            f"auto: {seen.describe()} before the timing, so the pools wait passively (spinning pools slow unevenly)"
    return spec.model_copy(update={"threading": "runtime-defaults"}), \
        f"auto: {seen.describe()} before the timing (a quiet machine), so each runtime keeps its defaults"


def time_interleaved(spec: InterleavedSpec, timeout_s: float | None = None) -> InterleavedResult:
    """Run `measure_interleaved` in a fresh interpreter with the target's threads."""
    spec, threading_reason = resolve_threading(spec)
    labels = [r.label for r in spec.runners]
    if len(set(labels)) != len(labels):
        raise BenchError(f"interleaved timing needs distinct labels, got {labels}.", fix="label each model uniquely.")
    decode_s = spec.decode.max_time_s if spec.decode is not None else 0.0
    timeout = timeout_s or spec.timing.max_time_s + decode_s + 300.0 + 30.0 * len(spec.runners)
    payload = run_module_worker("slimline.benchmarking.interleaved", spec.model_dump_json(), worker_env(spec), timeout,
                                f"interleaved timing of {labels}", "lower max_time_s or time fewer models together.")
    if "error" in payload:
        raise BenchError(f"interleaved timing of {labels} failed: {payload['error']}",
                         fix="benchmark the models one by one (`slimline bench`) to find the failing one.")
    return InterleavedResult.model_validate({**payload, "threading_reason": threading_reason})


def main(argv: list[str]) -> int:
    watch_parent()
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    try:
        result = measure_interleaved(InterleavedSpec.model_validate_json(spec_path.read_text()))
        result_path.write_text(result.model_dump_json())
        return 0
    except Exception as err:
        result_path.write_text(json.dumps({"error": f"{type(err).__name__}: {err}",
                                           "traceback": traceback.format_exc()}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
