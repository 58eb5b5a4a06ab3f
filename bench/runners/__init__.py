"""Runners now live with their runtimes (slimline.runtimes.<name>.runner); this package keeps the old
import paths working (`from slimline.benchmarking.runners import RunnerSpec, make_runner`)."""

from __future__ import annotations

from slimline.runtimes import make_runner
from slimline.runtimes.base import Runner, RunnerSpec

__all__ = ["Runner", "RunnerSpec", "make_runner"]
