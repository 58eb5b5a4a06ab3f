"""How much CPU other processes take right now, read from /proc/stat while slimline itself is idle.

The side-by-side timing (slimline.benchmarking.interleaved) must pick how the runtimes' thread pools wait. As
each runtime ships (PyTorch's OpenMP threads spin before they sleep, ONNX Runtime's pool spins) the timing is
unbiased on a quiet machine, but on cores other processes keep busy the spinning pools are descheduled
unevenly and PyTorch slows down far more than the others: the demo's speed-up went from 5.7x to 12.9x under
two CPU burners (bench/results/loaded-machine-cpu.md). Passive waits keep the ratio under load (7.6x -> 5.8x)
but cost PyTorch about 20% on a quiet machine (bench/results/interleaving-bias-cpu.md). So the choice is
made by measuring: the 1-minute load average cannot tell (it counts slimline's own export and quantization
just before the timing), but the busy time of every CPU over a short window in which this process sleeps is
exactly what others take.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: Others busy on at least this many cores (on average over the window): the machine is shared.
BUSY_CORES = 0.5


@dataclass(frozen=True)
class Contention:
    others_busy_cores: float  # CPU time of all other processes over the window, in cores
    cores: int
    window_s: float

    @property
    def busy(self) -> bool:
        return self.others_busy_cores >= BUSY_CORES

    def describe(self) -> str:
        return f"other processes kept {self.others_busy_cores:.2f} of {self.cores} cores busy"


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs, or None where /proc/stat is not there."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def measure_contention(window_s: float = 1.0) -> Contention | None:
    """Others' CPU use over `window_s`, during which this process sleeps; None where it cannot be read."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    before = _cpu_times()
    time.sleep(window_s)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    all_cores = os.cpu_count() or cores
    busy_fraction = (after[0] - before[0]) / (after[1] - before[1])
    return Contention(others_busy_cores=round(busy_fraction * all_cores, 3), cores=cores, window_s=window_s)
