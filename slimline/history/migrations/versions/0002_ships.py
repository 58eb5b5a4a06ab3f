"""Ship marks (`slimline history ship`) and a readable machine description, backfilled for old rows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def describe_machine(machine: dict) -> str:
    """The same words slimline.history.facts.machine_description writes for new rows."""
    gpus = ", ".join(d.get("name", "?") for d in machine.get("cuda_devices") or [])
    return f"{machine.get('cpu_model', 'unknown CPU')}" + (f" + {gpus}" if gpus else "")


def upgrade() -> None:
    op.create_table(
        "ships",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("shipped_at", sa.Text, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_ships_run", "ships", ["run_id"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("machine_description", sa.Text))
    connection = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("machine_json", sa.Text),
                    sa.column("machine_description", sa.Text))
    for run_id, machine_json in connection.execute(sa.select(runs.c.id, runs.c.machine_json)).all():
        description = describe_machine(json.loads(machine_json or "{}"))
        connection.execute(runs.update().where(runs.c.id == run_id).values(machine_description=description))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("machine_description")
    op.drop_table("ships")
