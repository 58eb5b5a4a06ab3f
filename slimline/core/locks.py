"""One writer per output, and temporaries that only slimline's own sweep can delete.

A writer holds an flock(2) lock on a file named for its output (see ExclusiveLock); the lock file
records the holder (pid, host, start, command) and a random session id. Every temporary the holder
creates for that output is named `.NAME.slimline-{tmp,old,work}-SESSION.RANDOM`. A process killed with
-9 leaves its lock file (unlocked: the kernel drops flock locks with the process) and its temporaries;
the next writer to take the lock reads the dead session's id from the file and removes exactly the
entries carrying it. A user's `.bashrc.old-2023`, `.thesis.tmp-final` or `.vim.old-backup/` never
matches: the sweep needs slimline's prefix *and* the id the lock file recorded.

Locks are re-entrant within one thread (the API takes the lock before its heavy imports, the pipeline
below it takes it again); a second process, or another thread of this one, is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from slimline.core.errors import OutputError

LOCK_SUFFIX = ".slimline.lock"
#: Written into a run directory when a run starts: what makes the directory slimline's to resume.
RUN_MARKER = ".slimline-run.json"
TemporaryRole = Literal["tmp", "old", "work"]
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.slimline-(?:tmp|old|work)-(?P<session>[0-9a-f]{12})\.[0-9a-f]{6}$")


def normalised_path(path: Path) -> Path:
    """Where `path` names, as the kernel would walk it: the parent resolved (symlinks and `..` followed), the
    final name kept (a link there is the link itself). `--out .` names the working directory, whose name is
    not empty, and a temporary sibling of it lies in its parent."""
    path = Path(path)
    try:
        return path.resolve() if path.name in ("", ".", "..") else path.parent.resolve() / path.name
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise OutputError(f"cannot resolve {path}: {err}.", fix="choose another path.") from err


def lock_path(out: Path, kind: str) -> Path:
    """A run directory holds its own lock; any other output is replaced by a rename, so its lock is a sibling."""
    out = normalised_path(out)
    return out / LOCK_SUFFIX if kind == "run" else out.parent / f".{out.name}{LOCK_SUFFIX}"


class ExclusiveLock:
    """An flock(2) lock on a file that is removed again on release, so no lock file is left beside --out.

    Written here rather than taken from filelock: filelock leaves its lock files in place on purpose,
    because unlinking on release lets a waiter lock the unlinked file while a newcomer locks a fresh
    one. The remedy is the classic check after locking that the file we hold is still the one at the
    path (same inode), retrying otherwise; the holder unlinks before it unlocks.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                self.fd = fd
                return True
            os.close(fd)  # the previous holder removed it between our open and our lock: lock the new one

    def previous_session(self) -> str | None:
        """The session id a killed holder left in the file (None for a fresh file or one we cannot read)."""
        assert self.fd is not None
        try:
            owner = json.loads(os.pread(self.fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            return None
        session = owner.get("session") if isinstance(owner, dict) else None
        return session if isinstance(session, str) and re.fullmatch(r"[0-9a-f]{12}", session) else None

    def write_owner(self, session: str | None = None) -> None:
        assert self.fd is not None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "command": " ".join(sys.argv)[:300], "session": session or new_session()}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(owner).encode(), 0)

    def release(self) -> None:
        import fcntl

        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def new_session() -> str:
    return secrets.token_hex(6)


@dataclass
class _Held:
    lock: ExclusiveLock
    session: str
    scope: Path  # a run directory: everything below it; otherwise the parent directory ...
    prefix: str  # ... and only the entries whose names start with `.OUT.` ("" for a run directory)
    thread: int
    depth: int = 1

    def covers(self, directory: Path, name: str) -> bool:
        if not self.prefix:
            return directory == self.scope or directory.is_relative_to(self.scope)
        return directory == self.scope and f".{name}.".startswith(self.prefix)


_HELD: dict[Path, _Held] = {}
_HELD_GUARD = threading.Lock()


def _owner_description(lock_file: Path) -> str:
    try:
        owner = json.loads(lock_file.read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        return f"pid {owner['pid']} on {owner['host']}, started {started}: {owner['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its details could not be read)"


@contextlib.contextmanager
def output_lock(out: Path, kind: str) -> Iterator[str]:
    """Hold the exclusive lock on `out` for the block (yields its session id); a second writer gets exit 2
    naming the first. Taking it sweeps what a killed holder left (see the module docstring)."""
    path = lock_path(out, kind)
    with _HELD_GUARD:
        held = _HELD.get(path)
        if held is not None and held.thread == threading.get_ident():
            held.depth += 1
    if held is not None and held.thread == threading.get_ident():
        try:
            yield held.session
        finally:
            held.depth -= 1
        return
    lock = ExclusiveLock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        acquired = lock.acquire()
    except OSError as err:
        raise OutputError(f"cannot lock {out}: {err}.", fix="choose a writable --out.") from err
    if not acquired:
        raise OutputError(f"{out} is being written by {_owner_description(path)}.",
                          fix="wait for that run to finish (or stop it), or choose another --out.")
    out = normalised_path(out)
    scope, prefix = (out, "") if kind == "run" else (out.parent, f".{out.name}.")
    try:
        dead = lock.previous_session()
        if dead is not None:
            sweep_stale_temporaries(scope, dead, prefix)
        session = new_session()
        lock.write_owner(session)
    except BaseException:
        lock.release()
        raise
    entry = _Held(lock, session, scope, prefix, threading.get_ident())
    with _HELD_GUARD:
        _HELD[path] = entry
    try:
        yield session
    finally:
        with _HELD_GUARD:
            _HELD.pop(path, None)
        lock.release()


def temporary_path(directory: Path, name: str, role: TemporaryRole) -> Path:
    """A fresh name for a temporary sibling `.NAME.slimline-ROLE-SESSION.RANDOM` in `directory`.

    SESSION is the id of the lock this thread holds over `directory` (so a killed writer's temporaries
    are swept by the next one), or a random one nobody records (never swept: outside a locked output,
    e.g. a cache, a temporary can only be removed by the process that made it).
    """
    directory = Path(os.path.abspath(directory))
    with _HELD_GUARD:
        held = [h for h in _HELD.values() if h.thread == threading.get_ident() and h.covers(directory, name)]
    session = held[0].session if held else new_session()
    return directory / f".{name}.slimline-{role}-{session}.{secrets.token_hex(3)}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temporaries(directory: Path, session: str, prefix: str = "") -> list[Path]:
    """Remove the temporaries the writer with `session` left below `directory` (only entries whose names
    start with `prefix` directly in it, when a prefix is given). Call only while holding the lock of the
    output they belong to: then nobody can still be writing them."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for root, dirs, files in os.walk(directory):
        for entry in [*dirs, *files]:
            match = _TEMPORARY.match(entry)
            if match and match["session"] == session and entry.startswith(prefix):
                _remove(Path(root) / entry)
                removed.append(Path(root) / entry)
        dirs[:] = [] if prefix else [d for d in dirs if not _TEMPORARY.match(d)]  # a prefix: the parent only
    return removed
