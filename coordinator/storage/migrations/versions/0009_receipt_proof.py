"""Receipts signed as trees: `frame_result.receipt_proof`, a frame's path to the root that
its receipt signature covers (frameproof.receipts). Results from before keep an empty proof:
their signatures cover their own payloads, as every receipt did then.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("frame_result") as batch:
        batch.add_column(sa.Column("receipt_proof", sa.String(), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("frame_result") as batch:
        batch.drop_column("receipt_proof")
