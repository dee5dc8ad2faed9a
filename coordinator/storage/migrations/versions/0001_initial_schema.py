"""The schema of 2026-12-05, the first revision; it also adopts older databases.

A database made before migrations existed (the release of 2026-11-23 and the builds after it
created their tables with `create_all`) has some of these tables and no revision: it gets the
tables, nullable columns and indexes it lacks, and is then at this revision like a new one.
Every later schema change is a revision of its own.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _table(name: str, *elements: Any) -> None:
    """Create the table, or add the nullable columns an older database lacks."""
    bind = op.get_bind()
    if not sa.inspect(bind).has_table(name):
        op.create_table(name, *elements)
        return
    present = {column["name"] for column in sa.inspect(bind).get_columns(name)}
    for column in elements:
        if not isinstance(column, sa.Column) or column.name in present:
            continue
        if not column.nullable:
            raise RuntimeError(f"{name}.{column.name} is missing and NOT NULL: this database "
                               "predates the schema revision 0001 can adopt")
        op.add_column(name, column)


def _index(table: str, name: str, columns: list[str], *, unique: bool = False) -> None:
    if name not in {index["name"] for index in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, columns, unique=unique)


def upgrade() -> None:
    _table("blob_owner",
           sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.PrimaryKeyConstraint("sha256", "owner"))
    _index("blob_owner", "ix_blob_owner_owner", ["owner"])
    _table("frame_timing",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("wall_seconds", sa.Float(), nullable=False),
           sa.Column("claimed_seconds", sa.Float(), nullable=False),
           sa.Column("claimed_score", sa.Float(), nullable=False),
           sa.Column("work_ms", sa.Integer(), nullable=False),
           sa.Column("at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("job_id", "frame"))
    _index("frame_timing", "ix_frame_timing_node_id", ["node_id"])
    _table("job_quote",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("probe_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("method", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("low_ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("high_ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("frames", sa.Integer(), nullable=False),
           sa.Column("cost_usd", sa.Float(), nullable=False),
           sa.Column("cost_low_usd", sa.Float(), nullable=False),
           sa.Column("cost_high_usd", sa.Float(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("job_id"))
    _table("lease_start",
           sa.Column("lease_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frames", sa.Integer(), nullable=False),
           sa.Column("leased_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("lease_id"))
    _index("lease_start", "ix_lease_start_leased_at", ["leased_at"])
    _table("node",
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("capabilities_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("benchmark_score", sa.Float(), nullable=False),
           sa.Column("registered_at", sa.Float(), nullable=False),
           sa.Column("last_seen_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("node_id"))
    _table("node_standing",
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("score", sa.Float(), nullable=False),
           sa.Column("consecutive_verified", sa.Integer(), nullable=False),
           sa.Column("verified", sa.Integer(), nullable=False),
           sa.Column("failed", sa.Integer(), nullable=False),
           sa.Column("delivered", sa.Integer(), nullable=False),
           sa.Column("frames_since_failure", sa.Integer(), nullable=True),
           sa.Column("quarantined", sa.Boolean(), nullable=False),
           sa.Column("leases_completed", sa.Integer(), nullable=False),
           sa.Column("leases_abandoned", sa.Integer(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("node_id"))
    _table("pay_bond",
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("held", sa.BigInteger(), nullable=False),
           sa.Column("posted", sa.BigInteger(), nullable=False),
           sa.Column("slashed", sa.BigInteger(), nullable=False),
           sa.Column("returned", sa.BigInteger(), nullable=False),
           sa.Column("unbond_requested_at", sa.Float(), nullable=True),
           sa.Column("last_op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("node_id"))
    _table("pay_chain_op",
           sa.Column("op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("amount", sa.BigInteger(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("epoch", sa.Integer(), nullable=True),
           sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("raw", sa.LargeBinary(), nullable=True),
           sa.Column("description", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("valid_until", sa.BigInteger(), nullable=True),
           sa.Column("attempts", sa.Integer(), nullable=False),
           sa.Column("previous_signatures", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.PrimaryKeyConstraint("op_id"),
           sa.UniqueConstraint("purpose"))
    _index("pay_chain_op", "ix_pay_chain_op_epoch", ["epoch"])
    _index("pay_chain_op", "ix_pay_chain_op_job_id", ["job_id"])
    _index("pay_chain_op", "ix_pay_chain_op_kind", ["kind"])
    _index("pay_chain_op", "ix_pay_chain_op_kind_created", ["kind", "created_at", "op_id"])
    _index("pay_chain_op", "ix_pay_chain_op_signature", ["signature"])
    _index("pay_chain_op", "ix_pay_chain_op_state", ["state"])
    _table("pay_epoch",
           sa.Column("epoch", sa.Integer(), nullable=False),
           sa.Column("started_at", sa.Float(), nullable=False),
           sa.Column("ended_at", sa.Float(), nullable=False),
           sa.Column("emission", sa.BigInteger(), nullable=False),
           sa.Column("fee", sa.BigInteger(), nullable=False),
           sa.Column("fee_minted", sa.Boolean(), nullable=False),
           sa.Column("work_pool", sa.BigInteger(), nullable=False),
           sa.Column("availability_pool", sa.BigInteger(), nullable=False),
           sa.Column("total_credits", sa.BigInteger(), nullable=False),
           sa.Column("unminted", sa.BigInteger(), nullable=False),
           sa.PrimaryKeyConstraint("epoch"))
    _table("pay_slash",
           sa.Column("slash_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("event_id", sa.Integer(), nullable=False),
           sa.Column("amount", sa.BigInteger(), nullable=False),
           sa.Column("to_creators", sa.BigInteger(), nullable=False),
           sa.Column("to_treasury", sa.BigInteger(), nullable=False),
           sa.Column("rejected_frames", sa.Integer(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("slash_id"),
           sa.UniqueConstraint("node_id", "event_id"))
    _index("pay_slash", "ix_pay_slash_node_id", ["node_id"])
    _table("pay_work_credit",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("work_ms", sa.BigInteger(), nullable=False),
           sa.Column("epoch", sa.Integer(), nullable=True),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("id"),
           sa.UniqueConstraint("job_id", "frame"))
    _index("pay_work_credit", "ix_pay_work_credit_epoch", ["epoch"])
    _index("pay_work_credit", "ix_pay_work_credit_node_id", ["node_id"])
    _table("peer_verdict",
           sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("peer_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("passed", sa.Boolean(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("audited", sa.Boolean(), nullable=False),
           sa.Column("agreed", sa.Boolean(), nullable=True),
           sa.Column("at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("verification_id"))
    _index("peer_verdict", "ix_peer_verdict_peer_id", ["peer_id"])
    _table("price_probe",
           sa.Column("probe_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("scene_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frames_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("seconds_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("machine_score", sa.Float(), nullable=False),
           sa.Column("method", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("low_ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("high_ms_per_frame", sa.Integer(), nullable=False),
           sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("probe_key"))
    _index("price_probe", "ix_price_probe_scene_id", ["scene_id"])
    _table("quarantined_record",
           sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("kind", "key"))
    _table("reputation_event",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("at", sa.Float(), nullable=False),
           sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("score_before", sa.Float(), nullable=False),
           sa.Column("score_after", sa.Float(), nullable=False),
           sa.Column("tier_after", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("details_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.PrimaryKeyConstraint("id"))
    _index("reputation_event", "ix_reputation_event_node_id", ["node_id"])
    _table("scene",
           sa.Column("scene_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("main_file", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("info_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("scene_id"))
    _table("verification",
           sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("image_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("blender_version", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("device", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("render_tiles", sa.Boolean(), nullable=False),
           sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("verifier_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("lease_expires_at", sa.Float(), nullable=True),
           sa.Column("passed", sa.Boolean(), nullable=True),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("details_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("pixel_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.Column("finished_at", sa.Float(), nullable=True),
           sa.PrimaryKeyConstraint("verification_id"))
    _index("verification", "ix_verification_job_id", ["job_id"])
    _index("verification", "ix_verification_node_id", ["node_id"])
    _index("verification", "ix_verification_state", ["state"])
    _index("verification", "ix_verification_task_id", ["task_id"])
    _table("verification_trouble",
           sa.Column("verification_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("failures", sa.Integer(), nullable=False),
           sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("stuck", sa.Boolean(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.PrimaryKeyConstraint("verification_id"))
    _index("verification_trouble", "ix_verification_trouble_job_id", ["job_id"])
    _table("job",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("scene_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("creator", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("tier", sa.Integer(), nullable=False),
           sa.Column("max_cost_usd", sa.Float(), nullable=False),
           sa.Column("frames_spec", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("chunk_size", sa.Integer(), nullable=False),
           sa.Column("settings_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("cancelled", sa.Boolean(), nullable=False),
           sa.Column("settled", sa.Boolean(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.ForeignKeyConstraint(["scene_id"], ["scene.scene_id"], ),
           sa.PrimaryKeyConstraint("job_id"))
    _index("job", "ix_job_created_at", ["created_at"])
    _index("job", "ix_job_creator", ["creator"])
    _index("job", "ix_job_scene_id", ["scene_id"])
    _index("job", "ix_job_settled", ["settled"])
    _table("pay_job",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("creator", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("tier", sa.Integer(), nullable=False),
           sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("deposit_op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("deposited", sa.BigInteger(), nullable=False),
           sa.Column("charged", sa.BigInteger(), nullable=False),
           sa.Column("charged_usd_micro", sa.BigInteger(), nullable=False),
           sa.Column("refunded", sa.BigInteger(), nullable=False),
           sa.Column("refund_op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("over_budget", sa.Boolean(), nullable=False),
           sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["deposit_op_id"], ["pay_chain_op.op_id"], ),
           sa.PrimaryKeyConstraint("job_id"))
    _index("pay_job", "ix_pay_job_creator", ["creator"])
    _index("pay_job", "ix_pay_job_state", ["state"])
    _table("pay_payout",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("epoch", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("credits", sa.BigInteger(), nullable=False),
           sa.Column("work_amount", sa.BigInteger(), nullable=False),
           sa.Column("availability_amount", sa.BigInteger(), nullable=False),
           sa.Column("amount", sa.BigInteger(), nullable=False),
           sa.Column("op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.ForeignKeyConstraint(["epoch"], ["pay_epoch.epoch"], ),
           sa.ForeignKeyConstraint(["op_id"], ["pay_chain_op.op_id"], ),
           sa.PrimaryKeyConstraint("id"),
           sa.UniqueConstraint("epoch", "node_id"))
    _index("pay_payout", "ix_pay_payout_epoch", ["epoch"])
    _index("pay_payout", "ix_pay_payout_node_id", ["node_id"])
    _table("pay_posting",
           sa.Column("posting_id", sa.Integer(), nullable=False),
           sa.Column("op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["op_id"], ["pay_chain_op.op_id"], ),
           sa.PrimaryKeyConstraint("posting_id"),
           sa.UniqueConstraint("op_id"))
    _table("scene_file",
           sa.Column("scene_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.ForeignKeyConstraint(["scene_id"], ["scene.scene_id"], ),
           sa.PrimaryKeyConstraint("scene_id", "sha256"))
    _index("scene_file", "ix_scene_file_sha256", ["sha256"])
    _table("frame_log",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["job.job_id"], ),
           sa.PrimaryKeyConstraint("job_id", "frame"))
    _table("job_budget",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame_price_tokens", sa.BigInteger(), nullable=False),
           sa.Column("paused", sa.Boolean(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("waiting_cost_tokens", sa.BigInteger(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["job.job_id"], ),
           sa.PrimaryKeyConstraint("job_id"))
    _index("job_budget", "ix_job_budget_paused", ["paused"])
    _table("job_control",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("paused", sa.Boolean(), nullable=False),
           sa.Column("priority", sa.Integer(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["job.job_id"], ),
           sa.PrimaryKeyConstraint("job_id"))
    _index("job_control", "ix_job_control_paused", ["paused"])
    _table("pay_frame_charge",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("render_seconds", sa.Float(), nullable=False),
           sa.Column("node_score", sa.Float(), nullable=False),
           sa.Column("work_ms", sa.BigInteger(), nullable=False),
           sa.Column("cost_usd_micro", sa.BigInteger(), nullable=False),
           sa.Column("cost_tokens", sa.BigInteger(), nullable=False),
           sa.Column("tokens_burned", sa.BigInteger(), nullable=False),
           sa.Column("over_budget", sa.Boolean(), nullable=False),
           sa.Column("op_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["pay_job.job_id"], ),
           sa.ForeignKeyConstraint(["op_id"], ["pay_chain_op.op_id"], ),
           sa.PrimaryKeyConstraint("id"),
           sa.UniqueConstraint("job_id", "frame"))
    _index("pay_frame_charge", "ix_pay_frame_charge_job_id", ["job_id"])
    _index("pay_frame_charge", "ix_pay_frame_charge_node_id", ["node_id"])
    _table("pay_ledger_line",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("posting_id", sa.Integer(), nullable=False),
           sa.Column("account", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("amount", sa.BigInteger(), nullable=False),
           sa.ForeignKeyConstraint(["posting_id"], ["pay_posting.posting_id"], ),
           sa.PrimaryKeyConstraint("id"))
    _index("pay_ledger_line", "ix_pay_ledger_line_account", ["account"])
    _index("pay_ledger_line", "ix_pay_ledger_line_posting_id", ["posting_id"])
    _table("task",
           sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("first_frame", sa.Integer(), nullable=False),
           sa.Column("last_frame", sa.Integer(), nullable=False),
           sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("attempts", sa.Integer(), nullable=False),
           sa.Column("lease_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
           sa.Column("lease_expires_at", sa.Float(), nullable=True),
           sa.Column("queued_at", sa.Float(), nullable=False),
           sa.Column("updated_at", sa.Float(), nullable=False),
           sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["job.job_id"], ),
           sa.PrimaryKeyConstraint("task_id"))
    _index("task", "ix_task_job_id", ["job_id"])
    _index("task", "ix_task_lease_id", ["lease_id"])
    _index("task", "ix_task_queue", ["state", "queued_at", "first_frame"])
    _index("task", "ix_task_state", ["state"])
    _table("frame_result",
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("frame", sa.Integer(), nullable=False),
           sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("blob_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("blob_size", sa.Integer(), nullable=False),
           sa.Column("extension", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("render_seconds", sa.Float(), nullable=False),
           sa.Column("blender_version", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("device", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("verdict", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("verification", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("pixel_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("charged", sa.Boolean(), nullable=False),
           sa.Column("receipt_signature", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("created_at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["job_id"], ["job.job_id"], ),
           sa.ForeignKeyConstraint(["task_id"], ["task.task_id"], ),
           sa.PrimaryKeyConstraint("job_id", "frame"))
    _index("frame_result", "ix_frame_result_charged", ["charged"])
    _index("frame_result", "ix_frame_result_pixel_sha256", ["pixel_sha256"])
    _table("task_failure",
           sa.Column("id", sa.Integer(), nullable=False),
           sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("node_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
           sa.Column("at", sa.Float(), nullable=False),
           sa.ForeignKeyConstraint(["task_id"], ["task.task_id"], ),
           sa.PrimaryKeyConstraint("id"))
    _index("task_failure", "ix_task_failure_job_id", ["job_id"])
    _index("task_failure", "ix_task_failure_node_id", ["node_id"])
    _index("task_failure", "ix_task_failure_task_id", ["task_id"])


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)


TABLES = [
    "blob_owner",
    "frame_timing",
    "job_quote",
    "lease_start",
    "node",
    "node_standing",
    "pay_bond",
    "pay_chain_op",
    "pay_epoch",
    "pay_slash",
    "pay_work_credit",
    "peer_verdict",
    "price_probe",
    "quarantined_record",
    "reputation_event",
    "scene",
    "verification",
    "verification_trouble",
    "job",
    "pay_job",
    "pay_payout",
    "pay_posting",
    "scene_file",
    "frame_log",
    "job_budget",
    "job_control",
    "pay_frame_charge",
    "pay_ledger_line",
    "task",
    "frame_result",
    "task_failure",
]
