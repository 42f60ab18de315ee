"""shim: task run leases, chord fan-in tables, date_done index

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flask_app.shim.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC = flask_app.shim.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("task_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", UTC, nullable=True))
        batch_op.add_column(sa.Column("lease_attempt", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("attempt_done", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_task_results_date_done"), ["date_done"], unique=False)

    op.create_table(
        "task_chords",
        sa.Column("group_id", sa.String(length=155), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("member_ids", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("fired_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("group_id"),
    )
    with op.batch_alter_table("task_chords", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_chords_created_at"), ["created_at"], unique=False)

    op.create_table(
        "task_chord_parts",
        sa.Column("group_id", sa.String(length=155), nullable=False),
        sa.Column("task_id", sa.String(length=155), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["task_chords.group_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "task_id"),
    )


def downgrade() -> None:
    op.drop_table("task_chord_parts")
    with op.batch_alter_table("task_chords", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_chords_created_at"))
    op.drop_table("task_chords")
    with op.batch_alter_table("task_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_results_date_done"))
        batch_op.drop_column("attempt_done")
        batch_op.drop_column("lease_attempt")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
