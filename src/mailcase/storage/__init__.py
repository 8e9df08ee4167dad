"""Storage: SQLAlchemy models, Alembic migrations, the spool (durable accept, group commit).

Modules:

- `db`          engines (SQLite WAL or PostgreSQL), write transactions, migrations
- `sql`         what the two engines spell differently (insert-ignore, upsert, claiming rows,
                JSON arrays, `BigId`), raw BEGIN IMMEDIATE and blob streaming on SQLite
- `rawinsert`   bulk INSERTs through the sqlite3 cursor, for the hot paths
- `models`      the tables
- `spool`       the durable accept path: one writer thread, group commit
- `spoolfiles`  each SMTP acceptor's own SQLite spool file, moved into the main database
- `addresses`   receiving addresses and the settings generation counter
- `messages`    spooled inbound messages: listing, claiming, marking, quarantine
- `emaillog`    the email log: queries and CSV/JSON export
- `tokens`      API tokens (only their SHA-256 is stored)

Everything here works on SQLite and PostgreSQL alike; SQLite-only SQL stays in this package,
and code outside it asks `sql` for a statement instead of branching on the dialect's name.
"""

__all__: list[str] = []
