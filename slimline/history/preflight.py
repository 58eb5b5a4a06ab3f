"""Is the history usable? Asked before any stage runs, so a broken database is exit 2 in milliseconds.

A truncated or corrupt history.sqlite was found only when the finished run tried to record itself, and
the run's PASS became exit 2 after all the work. The check here is cheap: the file's SQLite header
(a truncated file is shorter than the pages its header counts), `PRAGMA quick_check` (every page and
index, in milliseconds for a history of thousands of runs), and the schema (a slimline history, and no
newer than this slimline). Nothing is created or migrated: a missing file is made by the first record.

A history in the default place that cannot be written (a read-only home in a container) is left to the
record step, which warns and keeps the record beside the report; a corrupt one, or one the user chose,
is refused here.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from slimline.core.errors import OutputError
from slimline.history.store import HEAD_REVISION, HISTORY_ENV, resolve_history_path

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
QUICK_CHECK_ERRORS = 3  # quick_check(N) stops after N problems: the first ones say enough


def _fix(path: Path) -> str:
    return (f"run with --no-history, or --history PATH (or {HISTORY_ENV}) to use another file, or move {path} "
            "away (keep it: `sqlite3 FILE .recover` may save its runs); slimline then starts a new history there")


def _refuse(path: Path, why: str) -> OutputError:
    return OutputError(f"the results history {path} {why}; the run would finish and then fail to record itself.",
                       fix=_fix(path))


def _check_header(path: Path, size: int) -> None:
    """The 100-byte database header: the magic string, and a file as long as the pages it counts."""
    with open(path, "rb") as handle:
        header = handle.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or not header.startswith(SQLITE_MAGIC):
        raise _refuse(path, "is not an SQLite database (no SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _refuse(path, f"has a damaged header (page size {page_size})")
    pages = int.from_bytes(header[28:32], "big")
    counted = header[24:28] == header[92:96]  # the page count is valid only when these two agree
    if size % page_size or (counted and size < pages * page_size):
        raise _refuse(path, f"is truncated ({size:,} bytes; its header counts {pages:,} pages of {page_size:,} bytes)")


def _check_contents(path: Path) -> None:
    """quick_check, then the schema: alembic's revision no newer than ours, or no tables at all."""
    try:
        connection = sqlite3.connect(path, timeout=5)
    except sqlite3.Error as err:
        raise _refuse(path, f"cannot be opened ({err})") from err
    try:
        problems = [row[0] for row in connection.execute(f"PRAGMA quick_check({QUICK_CHECK_ERRORS})")]
        if problems != ["ok"]:
            raise _refuse(path, "is corrupt (SQLite's quick_check: " + "; ".join(problems)[:300] + ")")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        raise _refuse(path, f"is corrupt ({err})") from err
    finally:
        connection.close()
    if tables and "alembic_version" not in tables:
        raise _refuse(path, f"is an SQLite database but not a slimline history (tables {sorted(tables)[:5]})")
    if revision is not None and revision > HEAD_REVISION:
        raise OutputError(f"the history {path} has schema revision {revision}, newer than this slimline knows "
                          f"({HEAD_REVISION}).", fix="upgrade slimline, or pass --history with another file, or "
                                                     "--no-history.")


def _nearest_existing(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def check_history_file(history: Path | str | None) -> None:
    """Raise OutputError (exit 2) when the history at `history` (None: the default place) cannot take a record."""
    chosen = history is not None or bool(os.environ.get(HISTORY_ENV))
    path = resolve_history_path(history)
    if not path.exists() and not path.is_symlink():
        if chosen:  # it will be created on the first record: its directory must be (or become) writable
            ancestor = _nearest_existing(path.parent)
            if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
                raise _refuse(path, f"cannot be created: {ancestor} is not a writable directory")
        return
    if not path.is_file():
        raise _refuse(path, "is not a regular file")
    size = path.stat().st_size
    if size == 0:
        return  # what sqlite3.connect leaves: an empty database, made into a history by the first record
    try:
        _check_header(path, size)
    except OSError as err:
        raise _refuse(path, f"cannot be read ({err.strerror})") from err
    _check_contents(path)
    if chosen and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        raise _refuse(path, "cannot be written (its file or directory is read-only)")


def check_history_choice(history: Path | str | bool | None) -> None:
    """The pre-flight for run/bench/search/demo: `history` as the API takes it (False: --no-history)."""
    if history is False:
        return
    check_history_file(None if history is True or history is None else Path(history))
