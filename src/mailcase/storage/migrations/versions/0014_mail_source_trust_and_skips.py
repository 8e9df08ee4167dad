"""Mailbox sources (issue 19, what was left): trusted authserv-ids, skipped messages.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-04

- `mail_sources.trusted_authserv_ids`: the authserv-ids whose Authentication-Results (and ARC
  sets) the admin trusts for this mailbox; `mail_sources.skip_to`: the folder a message that
  cannot be taken (over the size limit, refused by the spool) is moved to, else left in place.
- `inbound_messages.trusted_authserv_ids`: set on fetched mail (a list, maybe empty), NULL on
  SMTP mail: the pipeline then takes the verdicts from the headers, not from the connection.
- `mail_source_skipped`: each message that could not be taken, for `source show`.

Written out in full rather than imported from the models: a migration must keep describing
the schema of its day when the models move on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)  # naive UTC text on SQLite, timestamptz on PostgreSQL


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite: inbound_messages may be big, and spool
    # files have no secondary indexes to bring back).
    op.add_column("mail_sources", sa.Column(
        "trusted_authserv_ids", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
    op.add_column("mail_sources", sa.Column("skip_to", sa.Text(), nullable=True))
    op.add_column("inbound_messages",
                  sa.Column("trusted_authserv_ids", sa.JSON(), nullable=True))
    op.create_table(
        "mail_source_skipped",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("folder", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("moved_to", sa.Text(), nullable=True),
        sa.Column("skipped_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["mail_sources.id"],
            name="fk_mail_source_skipped_source_id_mail_sources", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mail_source_skipped"),
    )
    op.create_index("ix_mail_source_skipped_source_id", "mail_source_skipped",
                    ["source_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_mail_source_skipped_source_id", table_name="mail_source_skipped")
    op.drop_table("mail_source_skipped")
    op.drop_column("inbound_messages", "trusted_authserv_ids")
    op.drop_column("mail_sources", "skip_to")
    op.drop_column("mail_sources", "trusted_authserv_ids")
