"""Where trials run: one after another in this process, or as Ray tasks (local Ray or a cluster).

The driver (this process) alone talks to the Optuna study: it asks for parameters, hands each trial
to the executor as plain data, and tells the study the outcome, so the SQLite storage has one writer.
Under Ray, trials run in parallel and their quick timings share cores with each other: they are marked
indicative, and the final interleaved re-bench of the best trials decides (slimline.pipeline.search.final).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from slimline.core.deps import require
from slimline.pipeline.search.trial import TrialArgs, TrialOutcome, run_trial

log = logging.getLogger(__name__)


class Executor(Protocol):
    parallel: int
    note: str

    def run(self, next_args: Callable[[], tuple[Any, TrialArgs] | None]) -> Iterator[tuple[Any, TrialOutcome]]:
        """Run trials while `next_args()` gives one; yield (handle, outcome) as each finishes."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    parallel = 1
    note = ""

    def run(self, next_args: Callable[[], tuple[Any, TrialArgs] | None]) -> Iterator[tuple[Any, TrialOutcome]]:
        while (item := next_args()) is not None:
            handle, args = item
            yield handle, run_trial(args)

    def close(self) -> None:
        return None


class RayExecutor:
    """Trials as Ray tasks (`num_cpus` each); at most `parallel` in flight."""

    def __init__(self, address: str | None, parallel: int | None, cpus_per_trial: int = 1,
                 local_num_cpus: int | None = None) -> None:
        self.ray = require("ray", purpose="slimline search --executor ray")
        self._owns_ray = not self.ray.is_initialized()
        if self._owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "ignore_reinit_error": True}
            if address:
                options["address"] = address
            elif local_num_cpus:
                options["num_cpus"] = local_num_cpus
            self.ray.init(**options)
        cluster_cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.parallel = max(1, parallel or cluster_cpus // cpus_per_trial)
        self.remote = self.ray.remote(num_cpus=cpus_per_trial, max_retries=0)(run_trial)
        self.note = (f"trials ran as Ray tasks, {self.parallel} at a time on {cluster_cpus} CPUs: their quick "
                     "timings shared cores and are indicative; the final interleaved re-bench decides")
        self._in_flight: dict[Any, Any] = {}

    def run(self, next_args: Callable[[], tuple[Any, TrialArgs] | None]) -> Iterator[tuple[Any, TrialOutcome]]:
        exhausted = False
        while True:
            while not exhausted and len(self._in_flight) < self.parallel:
                item = next_args()
                if item is None:
                    exhausted = True
                    break
                handle, args = item
                self._in_flight[self.remote.remote(args)] = handle
            if not self._in_flight:
                return
            ready, _ = self.ray.wait(list(self._in_flight), num_returns=1)
            handle = self._in_flight.pop(ready[0])
            yield handle, self.ray.get(ready[0])

    def pending(self) -> list[Any]:
        return list(self._in_flight.values())

    def close(self) -> None:
        for ref in list(self._in_flight):
            self.ray.cancel(ref, force=True)
        self._in_flight.clear()
        if self._owns_ray:
            self.ray.shutdown()
