"""Scratch directories in the system's temporary directory that name their owner, and the sweep of dead owners'.

A run killed with SIGKILL cannot remove its `/tmp/slimline-bench-*` (or -eval-, -outputs-, -bundle-)
directory. Each one slimline makes records its owner: pid, the process's start time (so a reused pid
is not mistaken for the owner) and the host (so a /tmp shared between containers is left alone). The
next run removes only directories that carry slimline's name pattern (its prefix + tempfile's random
suffix), belong to this user, hold an owner record, and whose owner is gone. Anything else, a
user's own `slimline-bench-notes` included, is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
OWNER_FILE = ".slimline-owner.json"
SCRATCH_PREFIXES = ("slimline-bench-", "slimline-outputs-", "slimline-eval-", "slimline-bundle-")
#: tempfile.mkdtemp's random part: 8 characters of [a-z0-9_].
_SUFFIX = re.compile(r"[a-z0-9_]{8}")
MAX_OWNER_BYTES = 4096


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else None


def owner_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "start_time": process_start_time(os.getpid()), "host": socket.gethostname()}


def owner_alive(record: dict[str, Any]) -> bool:
    """Is the process the record names still running (and the same process, not a reused pid)?"""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a record we understand: leave its directory alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    started = record.get("start_time")
    return started is None or process_start_time(pid) in (None, started)


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[Path]:
    """Like tempfile.TemporaryDirectory(prefix=...), with an owner record for `sweep_dead_scratch`; sweeps the
    dead owners' directories of the same prefix first."""
    if prefix not in SCRATCH_PREFIXES:
        raise ValueError(f"scratch prefix must be one of {SCRATCH_PREFIXES}, not {prefix!r}")
    sweep_dead_scratch((prefix,))
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        (path / OWNER_FILE).write_text(json.dumps(owner_record()))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _read_owner(directory: Path) -> dict[str, Any] | None:
    path = directory / OWNER_FILE
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_OWNER_BYTES:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def sweep_dead_scratch(prefixes: tuple[str, ...] = SCRATCH_PREFIXES) -> list[Path]:
    """Remove scratch directories of slimline processes that are gone (see the module doc); returns them."""
    base = Path(tempfile.gettempdir())
    removed: list[Path] = []
    host = socket.gethostname()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        prefix = next((p for p in prefixes if entry.name.startswith(p)), None)
        if prefix is None or not _SUFFIX.fullmatch(entry.name[len(prefix) :]):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        record = _read_owner(Path(entry.path))
        if record is None or record.get("host") != host or owner_alive(record):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed %s, left by slimline process %s, which is gone", entry.path, record.get("pid"))
        removed.append(Path(entry.path))
    return removed
