"""Users and queues (the console's accounts, case owners, notification recipients).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Written out in full rather than imported from the models (`mailcase.features.users.models`):
a migration must keep describing the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("role", sa.String(16), server_default=sa.text("'agent'"), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("time_zone", sa.String(64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "queues",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_queues"),
        sa.UniqueConstraint("name", name="uq_queues_name"),
    )
    op.create_table(
        "queue_members",
        sa.Column("queue_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"], ["queues.id"], name="fk_queue_members_queue_id_queues", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_queue_members_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("queue_id", "user_id", name="pk_queue_members"),
    )


def downgrade() -> None:
    op.drop_table("queue_members")
    op.drop_table("queues")
    op.drop_table("users")
