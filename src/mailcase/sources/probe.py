"""`source test`: what the agent would do with a source, without taking anything."""

from __future__ import annotations

from sqlalchemy import Engine

from mailcase.config import Settings
from mailcase.sources import store
from mailcase.sources.imap import connected
from mailcase.sources.plan import search_criteria, start_from, uids_to_take

__all__ = ["probe"]


def probe(engine: Engine, settings: Settings, name: str) -> list[str]:
    """Lines for the admin: connection, TLS, login, each folder's count and new messages.
    Raises SourceError with the reason when any step fails."""
    row = store.get_source(engine, name, private=True)
    secret = store.open_secret(settings, row["name"], row["secret"])
    s = settings.sources
    out = []
    with connected(host=row["host"], port=row["port"], security=row["security"],
                   username=row["username"], secret=secret, auth=row["auth"],
                   ca_file=s.ca_file or settings.delivery.ca_file, timeout=s.timeout) as conn:
        tls = (f"{conn.tls.version} {conn.tls.cipher}, certificate verified" if conn.tls
               else "PLAINTEXT (unencrypted)")
        out.append(f"connected to {row['host']}:{row['port']} ({tls}), logged in as "
                   f"{row['username']}")
        folders = len(row["folders"])
        if s.idle and conn.has(b"IDLE"):
            watched = folders if folders <= s.idle_connections else s.idle_connections - 1
            out.append(f"new mail: IDLE (pushed by the server) on {watched} connection(s), "
                       "one per folder" + (f"; {folders - watched} folder(s) polled every "
                                           f"{s.poll_interval:g} s" if watched < folders
                                           else ""))
        else:
            out.append(f"new mail: polled every {s.poll_interval:g} s")
        for folder in row["folders"]:
            uidvalidity, exists = conn.select(folder)
            last = start_from(store.folder_state(engine, row["id"], folder), uidvalidity)
            new = uids_to_take(conn.search(search_criteria(row["after"], last)), last,
                               10**9) if exists else []
            out.append(f"folder {folder!r}: {exists} messages, {len(new)} to take")
        action = {"seen": "mark them seen", "delete": "delete them",
                  "move": f"move them to {row['move_to']!r}"}[row["after"]]
        out.append(f"would store them as mail to <{row['address']}>, then {action}")
    return out
