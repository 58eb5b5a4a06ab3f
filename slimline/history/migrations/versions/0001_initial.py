"""The first history schema: runs, every measured figure with its spread, and the budget verdicts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # run | bench | search
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("checkpoint_sha256", sa.Text),
        sa.Column("artifact_sha256", sa.Text),
        sa.Column("artifact_format", sa.Text),
        sa.Column("profile_name", sa.Text, nullable=False),
        sa.Column("profile_json", sa.Text, nullable=False),
        sa.Column("recipe_json", sa.Text, nullable=False),
        sa.Column("machine_class", sa.Text, nullable=False),
        sa.Column("machine_json", sa.Text, nullable=False),
        sa.Column("versions_json", sa.Text, nullable=False),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("eval_examples_sha256", sa.Text),
        sa.Column("report_json", sa.Text, nullable=False),
    )
    op.create_index("ix_runs_profile_machine", "runs", ["profile_name", "machine_class"])
    op.create_index("ix_runs_checkpoint", "runs", ["checkpoint_sha256"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_role", sa.Text, nullable=False),  # baseline | intermediate | final
        sa.Column("model_label", sa.Text, nullable=False),
        sa.Column("shape", sa.Text),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("low", sa.Float),  # interval ends (latency: order-statistic CI of the p50; accuracy: Wilson)
        sa.Column("high", sa.Float),
        sa.Column("stdev", sa.Float),  # standard deviation or standard error, see `spread`
        sa.Column("n", sa.Integer),
        sa.Column("spread", sa.Text),
    )
    op.create_index("ix_metrics_run", "metrics", ["run_id"])
    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("limit_value", sa.Float, nullable=False),
        sa.Column("measured", sa.Float),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("spread", sa.Text),
        sa.Column("note", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("budgets")
    op.drop_table("metrics")
    op.drop_table("runs")
