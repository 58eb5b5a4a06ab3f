"""The history database: where it lives, how it is opened (WAL, one writer at a time), and its migrations.

SQLite in WAL mode lets readers go on while a run writes; every transaction starts with BEGIN
IMMEDIATE, so two runs finishing at once queue for the write lock (busy timeout) instead of failing
with "database is locked" half-way through. The schema is versioned by Alembic; a database at an older
revision is upgraded when it is opened, inside that same write transaction, so two processes never
migrate it twice. Reads and writes use the standard library's sqlite3; SQLAlchemy and Alembic are
imported only to migrate.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.core.deps import require
from slimline.core.errors import OutputError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: The newest migration in migrations/versions (a test checks it against Alembic's head).
HEAD_REVISION = "0002"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HISTORY_ENV = "SLIMLINE_HISTORY"
BUSY_TIMEOUT_MS = 60_000


def default_history_path() -> Path:
    """SLIMLINE_HISTORY, or history.sqlite in the user data directory (platformdirs)."""
    override = os.environ.get(HISTORY_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("slimline")) / "history.sqlite"


def resolve_history_path(history: str | Path | None) -> Path:
    return Path(history).expanduser() if history is not None else default_history_path()


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode whose transactions the caller opens with `transaction` (BEGIN IMMEDIATE)."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _wal_mode(connection)
    connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _wal_mode(connection: sqlite3.Connection) -> None:
    """Switching a new database to WAL needs an exclusive lock, and SQLite answers "database is locked" at once,
    without its busy handler, while another process opens the same new file: retry within the busy timeout
    (two runs starting together on a fresh history)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: take the write lock up front, so concurrent writers queue instead of deadlocking."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _engine(path: Path) -> Engine:
    """SQLAlchemy on the same file with the same settings, for Alembic's migrations only."""
    sqlalchemy = require("sqlalchemy", purpose="the results history's schema migrations")
    from sqlalchemy import event

    engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=sqlalchemy.pool.NullPool,
                                      connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy's documented pysqlite recipe: no implicit deferred BEGIN, ours is IMMEDIATE.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _current_revision(connection: Any) -> str | None:
    """Alembic's version row, read with whatever connection is at hand (sqlite3 or SQLAlchemy)."""
    run = connection.exec_driver_sql if hasattr(connection, "exec_driver_sql") else connection.execute
    if not run("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone():
        return None
    row = run("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def migrate(connection: Any, revision: str = "head") -> None:
    """Upgrade (Alembic) the database on `connection` to `revision`, within the caller's transaction."""
    require("alembic", purpose="the results history's schema migrations")
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _migrate_file(path: Path, revision: str) -> None:
    """Upgrade under SQLAlchemy's BEGIN IMMEDIATE: a second process waits, then finds nothing left to do."""
    engine = _engine(path)
    try:
        with engine.begin() as connection:
            current = _current_revision(connection)
            if current != (HEAD_REVISION if revision == "head" else revision):
                migrate(connection, revision)
    finally:
        engine.dispose()


def open_history(path: Path, *, revision: str = "head") -> sqlite3.Connection:
    """A connection to the history at `path`, created or upgraded to `revision` (tests pin an old one).

    The common case (already at head) costs one SELECT with the standard library's sqlite3: SQLAlchemy
    and Alembic take ~0.5 s to import, so they load only when there is a migration to run.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the history's directory {path.parent}: {err.strerror}.",
                          fix=f"pass --history PATH (or set {HISTORY_ENV}) to a writable place, or --no-history.") \
            from err
    try:
        connection = connect(path)
        current = _current_revision(connection)
        wanted = HEAD_REVISION if revision == "head" else revision
        if current is not None and current > HEAD_REVISION:
            connection.close()
            raise OutputError(f"the history {path} has schema revision {current}, newer than this slimline knows "
                              f"({HEAD_REVISION}).", fix="upgrade slimline, or pass --history with another file.")
        if current != wanted:
            _migrate_file(path, revision)
    except sqlite3.DatabaseError as err:
        raise _unusable(path, err) from err
    except Exception as err:
        if type(err).__module__.startswith("sqlalchemy"):
            raise _unusable(path, err) from err
        raise
    return connection


def _unusable(path: Path, err: Exception) -> OutputError:
    return OutputError(f"cannot use the history database {path}: {err}.",
                       fix=f"check the file (it must be a slimline history), pass --history PATH or set "
                           f"{HISTORY_ENV} to another file, or use --no-history.")
