"""class key on prebookings, fire_groups, dispatch_processes (dispatcher: FIFO per class)

Revision ID: 0006_class_key
Revises: 0005_gym
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

import flask_app.models

revision = "0006_class_key"
down_revision = "0005_gym"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("class_key", sa.String(length=160), nullable=True))
    _fill_class_keys()
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.alter_column("class_key", existing_type=sa.String(length=160), nullable=False)
        batch_op.create_index(
            "ix_prebookings_class_key_status", ["class_key", "status"], unique=False
        )
    op.create_table(
        "fire_groups",
        sa.Column("class_key", sa.String(length=160), nullable=False),
        sa.Column("leader", sa.String(length=128), nullable=False),
        sa.Column("anchor_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stagger_us", sa.Integer(), nullable=False),
        sa.Column("elected_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("class_key"),
    )
    with op.batch_alter_table("fire_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fire_groups_anchor_at"), ["anchor_at"], unique=False)
    op.create_table(
        "dispatch_processes",
        sa.Column("token", sa.String(length=128), nullable=False),
        sa.Column("seen_at", flask_app.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    with op.batch_alter_table("dispatch_processes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dispatch_processes_seen_at"), ["seen_at"], unique=False
        )


def class_key(booking_data: dict[str, Any], available_at: datetime) -> str:
    """flask_app.models.class_key as of this revision (a migration must not change later)."""
    opening_ms = round(available_at.timestamp() * 1000)
    box, class_id, day = (str(booking_data.get(k, "")) for k in ("box", "class_id", "day"))
    return f"{box}/{class_id}/{day}/{opening_ms}"


def _fill_class_keys() -> None:
    """Compute the key of every existing row (in Python: the same function the app uses)."""
    conn = op.get_bind()
    table = sa.table(
        "prebookings",
        sa.column("id", sa.String),
        sa.column("booking_data", sa.JSON),
        sa.column("available_at", flask_app.models.UTCDateTime(timezone=True)),
        sa.column("class_key", sa.String),
    )
    while True:
        rows = conn.execute(
            sa.select(table.c.id, table.c.booking_data, table.c.available_at)
            .where(table.c.class_key.is_(None))
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            opening = row.available_at
            if opening.tzinfo is None:
                opening = opening.replace(tzinfo=UTC)
            key = class_key(row.booking_data or {}, opening)
            conn.execute(sa.update(table).where(table.c.id == row.id).values(class_key=key))


def downgrade() -> None:
    with op.batch_alter_table("dispatch_processes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_processes_seen_at"))
    op.drop_table("dispatch_processes")
    with op.batch_alter_table("fire_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fire_groups_anchor_at"))
    op.drop_table("fire_groups")
    with op.batch_alter_table("prebookings", schema=None) as batch_op:
        batch_op.drop_index("ix_prebookings_class_key_status")
        batch_op.drop_column("class_key")
