"""gym: class start and zone, pre-flight check time, notify_url (issue 15)

Revision ID: 0005_gym
Revises: 0004_api_tokens
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import flask_app.models

revision = "0005_gym"
down_revision = "0004_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("class_start", flask_app.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("box_timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("notify_url", sa.String(length=2048), nullable=True))
        batch_op.add_column(
            sa.Column(
                "session_checked_at", flask_app.models.UTCDateTime(timezone=True), nullable=True
            )
        )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_url", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_column("notify_url")
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.drop_column("session_checked_at")
        batch_op.drop_column("notify_url")
        batch_op.drop_column("box_timezone")
        batch_op.drop_column("class_start")
