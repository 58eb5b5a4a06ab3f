"""Worker processes die with the slimline process that started them, even when it is killed with SIGKILL.

A benchmark worker runs in its own session (so Ctrl-C and timeouts can kill its whole process group);
after `kill -9` of `run` nobody was left to kill it, and it went on timing for minutes on the cores the
next run measures with. Two layers:

- Linux: the child asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`, through
  ctypes), between fork and exec, so there is no window in which the parent can die unnoticed;
- everywhere (and as a second guard): the worker is told its parent's pid (SLIMLINE_PARENT_PID) and a
  daemon thread exits the process once its parent is no longer that pid (re-parented to init or a
  subreaper).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
PARENT_PID_ENV = "SLIMLINE_PARENT_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5
ORPHAN_EXIT_CODE = 128 + signal.SIGKILL


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl


#: Resolved once, in the parent: the child between fork and exec only calls it.
_PRCTL = _load_prctl()


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen that makes the kernel SIGKILL the child when this process dies (Linux), or
    None where prctl is unavailable (the worker's `watch_parent` covers that case)."""
    prctl, kill = _PRCTL, int(signal.SIGKILL)
    if prctl is None:
        return None

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)  # survives exec; cleared only for set-uid programs

    return set_death_signal


def child_environment() -> dict[str, str]:
    """What a worker needs to watch its parent: this process's pid."""
    return {PARENT_PID_ENV: str(os.getpid())}


def watch_parent() -> None:
    """In a worker: exit at once if the parent named by SLIMLINE_PARENT_PID is already gone, then keep
    checking in a daemon thread. A no-op when the variable is absent (a worker run by hand)."""
    raw = os.environ.get(PARENT_PID_ENV, "")
    if not raw.isdigit():
        return
    expected = int(raw)
    if os.getppid() != expected:
        os._exit(ORPHAN_EXIT_CODE)

    def poll() -> None:
        while os.getppid() == expected:
            time.sleep(PARENT_POLL_S)
        log.warning("the slimline process that started this worker (pid %d) is gone: exiting", expected)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=poll, name="slimline-parent-watch", daemon=True).start()
