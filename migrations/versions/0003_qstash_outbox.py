"""QStash outbox, job leases, DLQ count and reason on prebookings

Revision ID: 0003_qstash_outbox
Revises: 0002
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flask_app.models

revision = "0003_qstash_outbox"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "qstash_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("prebooking_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("due_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("leased_by", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", flask_app.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gave_up_at", flask_app.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["prebooking_id"], ["prebookings.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("qstash_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_qstash_outbox_due_at", ["gave_up_at", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_qstash_outbox_prebooking_id"), ["prebooking_id"], unique=False
        )
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("expires_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("qstash_dlq_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("qstash_dlq_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.drop_column("qstash_dlq_reason")
        batch_op.drop_column("qstash_dlq_count")
    op.drop_table("job_leases")
    with op.batch_alter_table("qstash_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_qstash_outbox_prebooking_id"))
        batch_op.drop_index("ix_qstash_outbox_due_at")
    op.drop_table("qstash_outbox")
