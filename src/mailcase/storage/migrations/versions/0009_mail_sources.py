"""Mailbox sources (issue 19, the Email-to-Case agent): IMAP mailboxes and their folder state.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Written out in full rather than imported from the models (`mailcase.sources.models`): a
migration must keep describing the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    op.create_table(
        "mail_sources",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("security", sa.String(16), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("folders", sa.JSON(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("after", sa.String(16), nullable=False),
        sa.Column("move_to", sa.Text(), nullable=True),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("state", sa.String(16), server_default=sa.text("'new'"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", _UTC, nullable=True),
        sa.Column("last_ok_at", _UTC, nullable=True),
        sa.Column("taken", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mail_sources"),
        sa.UniqueConstraint("name", name="uq_mail_sources_name"),
    )
    op.create_table(
        "mail_source_folders",
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["mail_sources.id"],
            name="fk_mail_source_folders_source_id_mail_sources", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", "folder", name="pk_mail_source_folders"),
    )


def downgrade() -> None:
    op.drop_table("mail_source_folders")
    op.drop_table("mail_sources")
