"""Spool transfers: how far each acceptor's spool file was moved into the main database.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

Written out in full rather than imported from models.py: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spool_transfers",
        sa.Column("spool", sa.String(200), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_log_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("spool", name="pk_spool_transfers"),
    )


def downgrade() -> None:
    op.drop_table("spool_transfers")
