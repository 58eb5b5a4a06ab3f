"""Alembic environment for the results history: always run on the connection slimline hands over.

slimline.history.store opens the SQLite database (WAL, busy timeout, BEGIN IMMEDIATE) and passes its
connection in `config.attributes["connection"]`, so a migration runs inside the same write transaction
that serialises concurrent writers. `render_as_batch` makes ALTERs work on SQLite (copy-and-move).
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only slimline.history.store runs these migrations
    raise RuntimeError("run the history migrations through slimline.history.store.open_history")
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
