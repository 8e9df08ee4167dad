"""Storage: SQLAlchemy models, Alembic migrations, the spool (durable accept, group commit).

Modules:

- `db`          engines (SQLite WAL or PostgreSQL), write transactions, migrations
- `models`      the tables
- `spool`       the durable accept path: one writer thread, group commit
- `addresses`   receiving addresses and the settings generation counter
- `messages`    spooled inbound messages: listing, claiming, marking, quarantine
- `emaillog`    the email log: queries and CSV/JSON export
- `tokens`      API tokens (only their SHA-256 is stored)

Everything here works on SQLite and PostgreSQL alike; SQLite-only SQL stays in this package.
"""

__all__: list[str] = []
