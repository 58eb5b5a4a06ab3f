"""Several models timed side by side in one process: blocks of iterations, models in a shuffled order each round.

Timing models one after another lets a busy minute on the machine reorder them; interleaving spreads any
disturbance over all of them alike, so their ratios stay honest. How they are interleaved matters as much:

- One iteration per model per round (the old scheme, `round_robin_ms`) hands the cores to another runtime
  between every two iterations. Each model then pays for the switch on every iteration: a PyTorch op wakes
  OpenMP threads that had gone to sleep, ONNX Runtime's pool re-spins, caches refill. Measured on the demo
  (bench/results/interleaving-bias-cpu.md) that doubled torch's latency and so every speed-up against it.
- A block of consecutive iterations per model (`interleave_blocks`), its first `block_warmup_iters`
  dropped, pays the switch once per block and throws it away, while the shuffled order of the blocks
  within each round keeps the protection against load that comes and goes. Each model's block lasts
  about `block_s` (sized from its warm-up), so a slow and a fast model are exposed to the same stretch
  of time in every round.

Each function must block until its work is done (synchronise a device inside it). Used by
bench.interleaved (whole models in a worker process) and by the accuracy fallback (its passing
candidates), which sit in sibling layers and so share it from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
#: Below this many rounds no interval over rounds is computed (bench.budgets then says `inconclusive`).
MIN_ROUNDS_FOR_INTERVAL = 5


@dataclass(frozen=True)
class BlockPlan:
    """Per model: iterations dropped at the start of each block, iterations kept."""

    dropped: int
    kept: int


@dataclass
class BlockRounds(Generic[T]):
    """What `interleave_blocks` measured: `rounds[model][round]` holds the kept samples of one block."""

    rounds: list[list[list[T]]]
    plans: list[BlockPlan]
    seconds: float

    @property
    def round_count(self) -> int:
        return len(self.rounds[0]) if self.rounds else 0

    def pooled(self, model: int) -> list[T]:
        return [sample for block in self.rounds[model] for sample in block]


def block_plan(iteration_s: float, *, block_s: float, block_warmup_iters: int, min_block_iters: int,
               max_block_iters: int, max_block_warmup_s: float = math.inf) -> BlockPlan:
    """Enough kept iterations to fill `block_s` (between `min_block_iters` and `max_block_iters`), after
    `block_warmup_iters` dropped ones, but only as many dropped as fit in `max_block_warmup_s`.

    The switch between models costs a roughly fixed time (threads waking, another pool winding down,
    caches refilling: well under a few ms), so it biases short iterations and vanishes in long ones: a
    50 ms forward or a whole generation needs no iteration thrown away for it.
    """
    wanted = math.ceil(min(block_s / iteration_s, max_block_iters)) if iteration_s > 0 else max_block_iters
    affordable = math.floor(min(max_block_warmup_s / iteration_s, block_warmup_iters)) if iteration_s > 0 \
        else block_warmup_iters
    return BlockPlan(dropped=max(0, min(block_warmup_iters, affordable)),
                     kept=max(min_block_iters, min(max_block_iters, wanted)))


def timed_ms(run: Callable[[], object]) -> Callable[[], float]:
    """`run` as a function returning its own wall time in ms: the sample a latency timing keeps."""
    def sample() -> float:
        t0 = time.perf_counter_ns()
        run()
        return (time.perf_counter_ns() - t0) / 1e6
    return sample


def interleave_blocks(run_fns: Sequence[Callable[[], T]], *, warmup_iters: int = 5, block_s: float = 0.1,
                      block_warmup_iters: int = 2, min_block_iters: int = 3, max_block_iters: int = 20,
                      max_block_warmup_s: float = math.inf, min_iters: int = 30, min_rounds: int = 10,
                      min_time_s: float = 2.0, max_time_s: float = 60.0,
                      seed: int = 0) -> BlockRounds[T]:
    """Warm every model up, size its block, then run rounds of one block per model in a shuffled (seeded) order.

    Each function returns its sample (`timed_ms` makes a latency sampler of a plain call; a decode timing
    returns its own tokens/s). Stops after at least `min_rounds` rounds AND `min_iters` kept samples of
    every model AND `min_time_s`, or at `max_time_s` once MIN_ROUNDS_FOR_INTERVAL rounds are done (fewer
    when `min_rounds` asks for fewer). Every model runs at least one warm-up iteration: its duration sizes
    the block.
    """
    if not run_fns:
        raise ValueError("nothing to time")
    plans = []
    for run in run_fns:
        duration = 0.0
        for _ in range(max(warmup_iters, 1)):
            started = time.perf_counter()
            run()
            duration = time.perf_counter() - started  # the last warm-up iteration: the warmest estimate
        plans.append(block_plan(duration, block_s=block_s, block_warmup_iters=block_warmup_iters,
                                min_block_iters=min_block_iters, max_block_iters=max_block_iters,
                                max_block_warmup_s=max_block_warmup_s))
    rounds: list[list[list[T]]] = [[] for _ in run_fns]
    rng = np.random.default_rng(seed)
    floor_rounds = min(min_rounds, MIN_ROUNDS_FOR_INTERVAL)
    started = time.perf_counter()
    while True:
        for index in rng.permutation(len(run_fns)):
            run, plan = run_fns[index], plans[index]
            for _ in range(plan.dropped):
                run()
            rounds[index].append([run() for _ in range(plan.kept)])
        done = len(rounds[0])
        elapsed = time.perf_counter() - started
        enough = (done >= min_rounds and elapsed >= min_time_s
                  and all(done * plan.kept >= min_iters for plan in plans))
        if enough or (elapsed >= max_time_s and done >= floor_rounds):
            return BlockRounds(rounds=rounds, plans=plans, seconds=elapsed)


def round_robin_ms(run_fns: Sequence[Callable[[], object]], *, warmup_iters: int = 5, min_rounds: int = 30,
                   min_time_s: float = 2.0, max_time_s: float = 60.0, seed: int = 0) -> tuple[list[list[float]], int]:
    """One iteration of each function per round: per-function wall times in ms and the number of rounds.

    The old scheme, kept for the accuracy fallback's quick in-process ranking of ONNX Runtime sessions of
    one model; it charges every iteration with the switch between models (see the module docstring), so
    reports and verdicts use `interleave_blocks`. Runs at least `min_rounds` rounds AND `min_time_s`,
    stopping at `max_time_s` (after 5 rounds at least).
    """
    measured = interleave_blocks([timed_ms(run) for run in run_fns], warmup_iters=warmup_iters, block_s=0.0,
                                 block_warmup_iters=0, min_block_iters=1, max_block_iters=1, min_iters=min_rounds,
                                 min_rounds=min_rounds, min_time_s=min_time_s, max_time_s=max_time_s, seed=seed)
    return [measured.pooled(index) for index in range(len(run_fns))], measured.round_count
