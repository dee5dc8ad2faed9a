"""Several coordinators on one database: accepted call nonces and the farm's mint.

`call_nonce` holds the replay window's accepted calls for every coordinator (SQLite keeps
using the file journal; the table stays empty there); `farm_chain` records the mint the
ledger is about, so a coordinator on another chain refuses to share the database
(coordinator/storage/cluster.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('call_nonce',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('seen_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('call_nonce', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_call_nonce_seen_at'), ['seen_at'], unique=False)

    op.create_table('farm_chain',
    sa.Column('mint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('recorded_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('mint')
    )


def downgrade() -> None:
    op.drop_table('farm_chain')
    with op.batch_alter_table('call_nonce', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_call_nonce_seen_at'))

    op.drop_table('call_nonce')
