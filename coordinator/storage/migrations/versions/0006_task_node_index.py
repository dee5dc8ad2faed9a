"""An index on task(node_id, state): a node's own tasks are read on every lease of a bounded
new identity (its leases in flight, its frames per job); without it each was a scan of the
task table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_node", "task", ["node_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_task_node", table_name="task")
