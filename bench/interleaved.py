"""Several models timed side by side in one process, round-robin, so a noisy neighbour slows them all alike.

Timing candidates one after another lets a busy minute on the machine reorder them; interleaving one
iteration of each per round (in a shuffled order, seeded) spreads any disturbance over every model, so
their ratios stay honest. Idle ONNX Runtime pools must not spin (session.intra_op.allow_spinning=0) and
OpenMP pools must wait passively (OMP_WAIT_POLICY=PASSIVE, set before torch loads, hence its own
process): otherwise the model that just ran keeps the cores busy while the next one is timed.

Invoked as `python -m slimline.bench.interleaved SPECS.json RESULT.json`, or through `time_interleaved`.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from slimline.bench.benchmark import run_module_worker
from slimline.bench.latency import LatencyStats, summarize
from slimline.bench.runners import Runner, RunnerSpec, make_runner
from slimline.core.errors import BenchError
from slimline.core.lifeline import watch_parent
from slimline.core.timing import round_robin_ms
from slimline.formats.inputs import synthetic_feeds
from slimline.profiles.schema import Measurement, Shape


class RoundRobinTiming(BaseModel):
    """How long side-by-side timing runs: warm-up, then at least `min_rounds` AND `min_time_s`, capped at
    `max_time_s` (after 5 rounds at least)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    warmup_iters: int = Field(default=10, ge=0)
    min_rounds: int = Field(default=50, ge=5)
    min_time_s: float = Field(default=5.0, ge=0)
    max_time_s: float = Field(default=60.0, gt=0)

    @classmethod
    def of(cls, measurement: Measurement) -> RoundRobinTiming:
        """The profile's own bench settings, with one iteration of each model per round."""
        return cls(warmup_iters=measurement.warmup_iters, min_rounds=measurement.min_iters,
                   min_time_s=measurement.min_time_s, max_time_s=measurement.max_time_s)

    def at_most(self, **caps: float) -> RoundRobinTiming:
        """Each named setting lowered to its cap (a shorter timing, e.g. to screen search trials)."""
        return self.model_copy(update={name: min(getattr(self, name), cap) for name, cap in caps.items()})


class InterleavedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runners: list[RunnerSpec] = Field(min_length=1)
    shape: Shape
    timing: RoundRobinTiming = Field(default_factory=RoundRobinTiming)
    seed: int = 0


class InterleavedResult(BaseModel):
    latency: dict[str, LatencyStats]  # by runner label
    rounds: int
    seconds: float


def measure_round_robin(spec: InterleavedSpec) -> InterleavedResult:
    """Load every model, warm each up, then time one iteration of each per round until enough rounds."""
    runners, feeds = [], []
    for runner_spec in spec.runners:
        config_path = Path(runner_spec.model_dir) / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        runners.append(make_runner(runner_spec.model_copy(update={"allow_spinning": False})))
        feeds.append(synthetic_feeds(runner_spec.inputs, spec.shape, config, seed=spec.seed))

    def one_run(runner: Runner, feed: dict[str, np.ndarray]) -> Callable[[], None]:
        def run() -> None:
            runner.run(feed)
            runner.synchronize()
        return run

    started = time.perf_counter()
    samples, rounds = round_robin_ms([one_run(r, f) for r, f in zip(runners, feeds, strict=True)],
                                     seed=spec.seed, **spec.timing.model_dump())
    latency = {s.label: summarize(times, spec.shape.batch_size) for s, times in zip(spec.runners, samples, strict=True)}
    return InterleavedResult(latency=latency, rounds=rounds, seconds=round(time.perf_counter() - started, 2))


def time_interleaved(spec: InterleavedSpec, timeout_s: float | None = None) -> InterleavedResult:
    """Run `measure_round_robin` in a fresh interpreter with passive OpenMP waits and the target's threads."""
    labels = [r.label for r in spec.runners]
    if len(set(labels)) != len(labels):
        raise BenchError(f"interleaved timing needs distinct labels, got {labels}.", fix="label each model uniquely.")
    env = {"OMP_NUM_THREADS": str(spec.runners[0].threads), "OMP_WAIT_POLICY": "PASSIVE"}
    timeout = timeout_s or spec.timing.max_time_s + 300.0 + 30.0 * len(spec.runners)
    payload = run_module_worker("slimline.bench.interleaved", spec.model_dump_json(), env, timeout,
                                f"interleaved timing of {labels}", "lower max_time_s or time fewer models together.")
    if "error" in payload:
        raise BenchError(f"interleaved timing of {labels} failed: {payload['error']}",
                         fix="benchmark the models one by one (`slimline bench`) to find the failing one.")
    return InterleavedResult.model_validate(payload)


def main(argv: list[str]) -> int:
    watch_parent()
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    try:
        result = measure_round_robin(InterleavedSpec.model_validate_json(spec_path.read_text()))
        result_path.write_text(result.model_dump_json())
        return 0
    except Exception as err:
        result_path.write_text(json.dumps({"error": f"{type(err).__name__}: {err}",
                                           "traceback": traceback.format_exc()}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
