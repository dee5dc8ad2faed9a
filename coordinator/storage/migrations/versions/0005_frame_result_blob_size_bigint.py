"""frame_result.blob_size is a BIGINT: a frame's image may be a blob of up to 8 GiB
(blobstore.DEFAULT_MAX_BLOB_BYTES), and PostgreSQL refused completions of one over 2 GiB
(INTEGER out of range). SQLite's INTEGER already holds 64 bits: its table is left as it is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("frame_result", "blob_size", existing_type=sa.Integer(),
                        type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("frame_result", "blob_size", existing_type=sa.BigInteger(),
                        type_=sa.Integer(), existing_nullable=False)
