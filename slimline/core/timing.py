"""Round-robin timing: one iteration of each model per round, in a shuffled (seeded) order.

Timing models one after another lets a busy minute on the machine reorder them; interleaving spreads
any disturbance over all of them alike, so their ratios stay honest. Used by bench.interleaved (whole
models in a worker process) and by the accuracy fallback (its passing candidates), which sit in
sibling layers and so share it from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def round_robin_ms(run_fns: Sequence[Callable[[], object]], *, warmup_iters: int = 5, min_rounds: int = 30,
                   min_time_s: float = 2.0, max_time_s: float = 60.0, seed: int = 0) -> tuple[list[list[float]], int]:
    """Per-function wall times in ms (one list per function) and the number of rounds run.

    Runs at least `min_rounds` rounds AND `min_time_s`, stopping at `max_time_s` (after 5 rounds at least).
    Each function must block until its work is done (synchronise a device inside it).
    """
    for run in run_fns:
        for _ in range(warmup_iters):
            run()
    samples: list[list[float]] = [[] for _ in run_fns]
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    rounds = 0
    while True:
        for index in rng.permutation(len(run_fns)):
            t0 = time.perf_counter_ns()
            run_fns[index]()
            samples[index].append((time.perf_counter_ns() - t0) / 1e6)
        rounds += 1
        elapsed = time.perf_counter() - started
        if (rounds >= min_rounds and elapsed >= min_time_s) or (elapsed >= max_time_s and rounds >= 5):
            return samples, rounds
