"""frame_result.passes_sha256 and passes_size: the node's passes file of a denoised frame,
which the verifier checks on its noisy pass (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("frame_result") as batch:
        batch.add_column(sa.Column("passes_sha256", sqlmodel.sql.sqltypes.AutoString(),
                                   nullable=True))
        batch.add_column(sa.Column("passes_size", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("frame_result") as batch:
        batch.drop_column("passes_size")
        batch.drop_column("passes_sha256")
