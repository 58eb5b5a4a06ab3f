"""Output directories: whose they are, who is writing them, and what a killed run left behind.

Every command that writes refuses an `--out` holding something slimline did not write there (a model
directory is recognised by its manifest, a run directory by its marker, stages or report) unless
`--force`, so a typo cannot wipe a user's folder. One process at a time writes an output: an exclusive
lock (flock, see ExclusiveLock) names the holder to the second one. Temporary siblings a killed process left behind
(`.NAME.tmp-*`, `.NAME.old-*`) are swept by the next writer, which holds the lock and so knows that
nobody else is still writing them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from slimline.core.artifact import describe_os_error
from slimline.core.errors import OutputError

#: Written into a run directory when a run starts: what makes the directory slimline's to resume.
RUN_MARKER = ".slimline-run.json"
LOCK_SUFFIX = ".slimline.lock"
OutputKind = Literal["model", "run"]


def _is_model_dir(path: Path) -> bool:
    manifest = path / "manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"schema_version", "format", "files"} <= set(data)


def _is_run_dir(path: Path) -> bool:
    if (path / RUN_MARKER).is_file() or (path / "stages").is_dir():
        return True
    try:
        report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"schema_version", "verdict", "budgets"} <= set(report)


def _protected(path: Path) -> str | None:
    """Places `--force` must never replace: a typo there would be a disaster."""
    resolved = path.resolve()
    home = Path.home().resolve()
    if resolved == Path(resolved.anchor):
        return "the filesystem root"
    if resolved == home or home.is_relative_to(resolved):
        return "your home directory or one that contains it"
    if Path.cwd().resolve().is_relative_to(resolved):
        return "the working directory or one that contains it"
    return None


def check_output(out: Path, kind: OutputKind, *, force: bool = False) -> None:
    """Refuse `out` when it holds something slimline did not write (before any work is done).

    kind "model": a directory that will be replaced by a model directory (export, compress).
    kind "run": a directory that stages and reports are written into (run, bench); resumable.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    replaceable = kind == "model" and not out.is_symlink()  # a run directory is written into, never replaced
    if out.is_symlink() or not out.is_dir():
        what = "a link" if out.is_symlink() else "a file"
        if not (force and replaceable):
            raise OutputError(f"--out {out} is {what}, not a directory; slimline will not replace it.",
                              fix="choose another --out" + (", or pass --force to replace it." if replaceable else "."))
    elif not any(out.iterdir()) or (_is_model_dir(out) if kind == "model" else _is_run_dir(out)):
        return
    elif not force:
        what = "a slimline model directory" if kind == "model" else "a slimline run directory"
        raise OutputError(f"--out {out} already holds files and is not {what}; writing there could destroy them.",
                          fix="choose an empty or new --out, or pass --force if its contents may be replaced.")
    protected = _protected(out) if replaceable else None
    if protected is not None:
        raise OutputError(f"--out {out} is {protected}; slimline will not replace it, even with --force.",
                          fix="choose a new directory for --out.")


def check_writable(out: Path) -> None:
    """`out` can be created (or written) here: checked on the nearest existing ancestor, creating nothing."""
    probe = Path(out).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create --out {out}: {probe} is not a directory.", fix="choose another --out.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {probe} (for --out {out}): permission denied.",
                          fix="choose a writable --out directory or fix its permissions.")


def lock_path(out: Path, kind: OutputKind) -> Path:
    """A run directory holds its own lock; a model output is replaced by a rename, so its lock is a sibling."""
    out = Path(out).absolute()
    return out / LOCK_SUFFIX if kind == "run" else out.parent / f".{out.name}{LOCK_SUFFIX}"


class ExclusiveLock:
    """An flock(2) lock on a file that is removed again on release, so no lock file is left beside --out.

    Written here rather than taken from filelock: filelock leaves its lock files in place on purpose,
    because unlinking on release lets a waiter lock the unlinked file while a newcomer locks a fresh
    one. The remedy is the classic check after locking that the file we hold is still the one at the
    path (same inode), retrying otherwise; the holder unlinks before it unlocks. The file holds the
    holder's pid, host, start time and command, for the message a second writer gets.
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

    def write_owner(self) -> None:
        assert self.fd is not None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "command": " ".join(sys.argv)[:300]}
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


def _owner_description(lock_file: Path) -> str:
    try:
        owner = json.loads(lock_file.read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        return f"pid {owner['pid']} on {owner['host']}, started {started}: {owner['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its details could not be read)"


@contextlib.contextmanager
def output_lock(out: Path, kind: OutputKind) -> Iterator[None]:
    """Hold the exclusive lock on `out` for the block; a second writer gets exit 2 naming the first."""
    path = lock_path(out, kind)
    lock = ExclusiveLock(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        acquired = lock.acquire()
    except OSError as err:
        raise OutputError(f"cannot lock {out}: {err}.", fix="choose a writable --out.") from err
    if not acquired:
        raise OutputError(f"{out} is being written by {_owner_description(path)}.",
                          fix="wait for that run to finish (or stop it), or choose another --out.")
    try:
        lock.write_owner()
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def claimed_run_dir(out: Path) -> Iterator[Path]:
    """Create a run directory (only now: after the pre-flight passed), lock it, mark it as slimline's, and
    sweep what a killed run left in it and in its stages/."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise describe_os_error(err, out) from err
    with output_lock(out, "run"):
        marker = out / RUN_MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"schema_version": 1, "written_by": "slimline"}) + "\n", encoding="utf-8")
        sweep_stale_temporaries(out)
        sweep_stale_temporaries(out / "stages")
        yield out


def sweep_stale_temporaries(directory: Path, name: str = "") -> list[Path]:
    """Remove the `.NAME.tmp-*` / `.NAME.old-*` entries a killed process left in `directory` (every NAME,
    or only `name`'s when the directory is shared with other outputs).

    Call only while holding the lock of the output they belong to: then nobody can still be writing them.
    """
    removed: list[Path] = []
    if not Path(directory).is_dir():
        return removed
    for path in Path(directory).iterdir():
        if not path.name.startswith(f".{name}." if name else "."):
            continue
        if ".tmp-" in path.name or ".old-" in path.name:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
