"""A lease's start moves onto its task: `task.leased_at`, and the `lease_start` table goes.

The network's own measure of a node's speed (frame_timing.wall_seconds) is the time from
lease to delivery. That start was a row of its own, written with every claim, read and
deleted with every completion: three statements and two indexes per frame cycle on the hot
path (docs/BENCHMARKS.md, "cycles"). On the task row it is written by the claim's UPDATE and
read by the completion's SELECT, which both ran anyway. Leases in flight at the upgrade keep
their start from the old table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task", sa.Column("leased_at", sa.Float(), nullable=True))
    op.execute("UPDATE task SET leased_at = (SELECT s.leased_at FROM lease_start s "
               "WHERE s.lease_id = task.lease_id) WHERE state = 'leased'")
    op.drop_index("ix_lease_start_leased_at", table_name="lease_start")
    op.drop_table("lease_start")


def downgrade() -> None:
    op.create_table("lease_start",
                    sa.Column("lease_id", sa.String(), nullable=False),
                    sa.Column("node_id", sa.String(), nullable=False),
                    sa.Column("job_id", sa.String(), nullable=False),
                    sa.Column("frames", sa.Integer(), nullable=False),
                    sa.Column("leased_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("lease_id"))
    op.create_index("ix_lease_start_leased_at", "lease_start", ["leased_at"])
    op.execute("INSERT INTO lease_start (lease_id, node_id, job_id, frames, leased_at) "
               "SELECT lease_id, node_id, job_id, last_frame - first_frame + 1, leased_at "
               "FROM task WHERE state = 'leased' AND leased_at IS NOT NULL")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("leased_at")
