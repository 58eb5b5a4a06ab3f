"""Reading a small file the user named (a key, a token, a signature, a manifest): bounded, regular files only.

`path.read_bytes()` on `/dev/zero` reads until MemoryError, and opening a FIFO blocks until someone
writes to it, so `verify --key /dev/zero` ate 2.6 GB and `--key FIFO` hung. Here the file is opened
without blocking (O_NONBLOCK: a FIFO opens at once instead of waiting for a writer), checked on the
open descriptor (so it cannot be swapped for another file in between) to be a regular file no larger
than the limit, and read with the limit + 1 bytes at most. Symlinks are followed: a key kept elsewhere
and linked is a normal setup; what the link points at must still be a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from slimline.core.errors import BadInputError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_small_file(path: Path | str, *, max_bytes: int, what: str, fix: str,
                    error: type[BadInputError] = BadInputError) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `max_bytes`; anything else raises
    `error` naming `what` (e.g. "public key") and the path, with `fix`. Never blocks, never reads more
    than `max_bytes` + 1 bytes."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as err:
        raise error(f"{what} {path} does not exist.", fix=fix) from err
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}.", fix="check the path and its permissions.") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is {_kind(info.st_mode)}, not a regular file.", fix=fix)
        if info.st_size > max_bytes:
            raise error(f"{what} {path} is {info.st_size:,} bytes; it may be at most {max_bytes:,}.", fix=fix)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}.", fix="check the path and its permissions.") from err
    finally:
        os.close(fd)
    if size > max_bytes:  # it grew while being read
        raise error(f"{what} {path} is over {max_bytes:,} bytes.", fix=fix)
    return b"".join(chunks)
