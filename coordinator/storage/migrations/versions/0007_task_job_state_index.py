"""An index on task(job_id, state): the settlement sweep asks, for every unsettled job,
whether any of its tasks is being verified, queued or leased, and the budget gate sums a
job's leased and live frames. With only task(job_id) each was a walk of all the job's tasks:
118 ms a sweep with 100,000 queued frames in 100 jobs, 1 ms with the index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_job_state", "task", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_task_job_state", table_name="task")
