"""The rows of mailbox sources: add/list/show/remove/pause/resume, the sealed secret, the folder
state and the visible health (state, last error, back-off) that `source list` shows."""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets as _random
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailcase.config import Settings
from mailcase.secrets import seal, unseal
from mailcase.smtp.address import AddressError, parse_mailbox
from mailcase.sources.imap import SourceError
from mailcase.sources.models import mail_source_folders, mail_source_skipped, mail_sources
from mailcase.sources.plan import AFTER_ACTIONS, SECURITIES, FolderState
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

__all__ = [
    "PUBLIC_COLUMNS",
    "add_source",
    "count_by_state",
    "folder_state",
    "folder_states",
    "get_source",
    "list_sources",
    "open_secret",
    "record_failure",
    "record_ok",
    "record_skipped",
    "remove_source",
    "save_folder_state",
    "set_paused",
    "set_secret",
    "set_trusted",
    "skipped",
]

#: HKDF label of the key that seals sources' passwords and tokens.
SECRET_INFO = b"mailcase mail source secret v1"
_PREFIX = "aesgcm1:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9.:_\[\]-]{1,255}$")
# RFC 8601 §2.5: an authserv-id is usually a host name; a token, compared case-insensitively.
_AUTHSERV_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_MAX_TRUSTED = 20
_MAX_FOLDERS = 50  # each is looked into every round (and may hold an IDLE connection)
#: Skipped messages shown by `source show` (the newest).
SKIPPED_SHOWN = 50

#: Everything but the secret and the token.
PUBLIC_COLUMNS = [c for c in mail_sources.columns if c.name not in ("secret", "token")]


def _seal(settings: Settings, name: str, secret: str) -> str:
    blob = seal(settings, SECRET_INFO, secret.encode(), name.encode())
    return _PREFIX + base64.b64encode(blob).decode("ascii")


def open_secret(settings: Settings, name: str, stored: str) -> str:
    """The password or token of source `name`; SourceError if this server secret cannot open
    it (then set it again)."""
    try:
        if not stored.startswith(_PREFIX):
            raise ValueError("not sealed")
        blob = base64.b64decode(stored[len(_PREFIX):], validate=True)
        return unseal(settings, SECRET_INFO, blob, name.encode()).decode()
    except (InvalidTag, ValueError):
        raise SourceError(
            f"source {name!r}: its password cannot be decrypted with this server secret "
            f"(server.secret_file changed?); set it again: `mailcase source set-secret {name}`"
        ) from None


def _check_trusted(trusted: list[str]) -> list[str]:
    ids = []
    for t in trusted:
        t = t.strip().lower()
        if not _AUTHSERV_ID.match(t):
            raise SourceError(f"authserv-id {t!r}: give the host name the mailbox server writes "
                              "first in its Authentication-Results (e.g. mx.example.com)")
        if t not in ids:
            ids.append(t)
    if len(ids) > _MAX_TRUSTED:
        raise SourceError(f"at most {_MAX_TRUSTED} trusted authserv-ids per source")
    return ids


def _check(name: str, host: str, port: int, security: str, auth: str, folders: list[str],
           after: str, move_to: str | None, skip_to: str | None = None) -> None:
    if not _NAME.match(name):
        raise SourceError("a source name is 1-64 letters, digits, '.', '_' or '-'")
    if not _HOST.match(host):
        raise SourceError(f"host {host!r} is not a host name or IP address")
    if not 1 <= port <= 65535:
        raise SourceError(f"port {port}: use 1 to 65535 (993 for TLS, 143 for STARTTLS)")
    if security not in SECURITIES:
        raise SourceError(f"security {security!r}: one of {', '.join(SECURITIES)}")
    if auth not in ("password", "xoauth2"):
        raise SourceError(f"auth {auth!r}: password or xoauth2")
    if not folders or any(not f or len(f) > 255 or not f.isprintable() for f in folders):
        raise SourceError("give at least one folder (e.g. INBOX), each 1-255 printable characters")
    if len(folders) > _MAX_FOLDERS:
        raise SourceError(f"at most {_MAX_FOLDERS} folders per source: add another source for more")
    if after not in AFTER_ACTIONS:
        raise SourceError(f"after {after!r}: one of {', '.join(AFTER_ACTIONS)}")
    if after == "move" and not move_to:
        raise SourceError("--after move needs --move-to FOLDER")
    if move_to and move_to in folders:
        raise SourceError("--move-to must not be a folder the source reads")
    if skip_to is not None and (not skip_to or len(skip_to) > 255 or not skip_to.isprintable()
                                or skip_to in folders):
        raise SourceError("--skip-to: a folder (1-255 printable characters) the source does not "
                          "read")


def add_source(engine: Engine, settings: Settings, *, name: str, host: str, port: int,
               security: str, username: str, secret: str, auth: str = "password",
               folders: list[str], address: str, after: str = "seen",
               move_to: str | None = None, paused: bool = False,
               trusted_authserv_ids: list[str] | None = None,
               skip_to: str | None = None) -> dict[str, Any]:
    """Store a source (its secret sealed); returns its public row."""
    name, host = name.strip(), host.strip()
    _check(name, host, port, security, auth, folders, after, move_to, skip_to)
    trusted = _check_trusted(trusted_authserv_ids or [])
    if not username or not secret:
        raise SourceError("a source needs a username and a password (or an OAuth2 token)")
    try:
        address = parse_mailbox(address)
    except AddressError as e:
        raise SourceError(f"routing address {address!r}: {e}") from None
    try:
        with begin_write(engine) as conn:
            conn.execute(insert(mail_sources).values(
                name=name, token=_random.token_hex(16), host=host, port=port,
                security=security, auth=auth, username=username,
                secret=_seal(settings, name, secret), folders=list(folders), address=address,
                after=after, move_to=move_to if after == "move" else None, paused=paused,
                state="paused" if paused else "new", created_at=utcnow(),
                trusted_authserv_ids=trusted, skip_to=skip_to,
            ))
    except IntegrityError:
        raise SourceError(f"a source named {name!r} exists already") from None
    return get_source(engine, name)


def _which(source: int | str) -> Any:
    if isinstance(source, int) or source.isdigit():
        return mail_sources.c.id == int(source)
    return mail_sources.c.name == source


def get_source(engine: Engine, source: int | str, *, private: bool = False) -> dict[str, Any]:
    """One source by name or id (with `secret` and `token` only when `private`)."""
    cols = list(mail_sources.columns) if private else PUBLIC_COLUMNS
    with engine.connect() as conn:
        row = conn.execute(select(*cols).where(_which(source))).mappings().first()
    if row is None:
        raise SourceError(f"no source {source!r}: see `mailcase source list`")
    return dict(row)


def list_sources(engine: Engine, *, private: bool = False) -> list[dict[str, Any]]:
    cols = list(mail_sources.columns) if private else PUBLIC_COLUMNS
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(*cols).order_by(mail_sources.c.id))
                .mappings()]


def count_by_state(engine: Engine) -> dict[str, int]:
    """Sources by state (paused ones as "paused"), for the metrics."""
    c = mail_sources.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.state, c.paused)).all()
    out: dict[str, int] = {}
    for state, paused in rows:
        key = "paused" if paused else str(state)
        out[key] = out.get(key, 0) + 1
    return out


def remove_source(engine: Engine, source: int | str) -> None:
    row = get_source(engine, source)
    with begin_write(engine) as conn:
        conn.execute(delete(mail_source_skipped)
                     .where(mail_source_skipped.c.source_id == row["id"]))
        conn.execute(delete(mail_source_folders)
                     .where(mail_source_folders.c.source_id == row["id"]))
        conn.execute(delete(mail_sources).where(mail_sources.c.id == row["id"]))


def set_paused(engine: Engine, source: int | str, paused: bool) -> dict[str, Any]:
    row = get_source(engine, source)
    values: dict[str, Any] = {"paused": paused, "state": "paused" if paused else "new"}
    if not paused:  # resume: try at once, whatever the back-off said
        values.update(next_attempt_at=None, failures=0)
    with begin_write(engine) as conn:
        conn.execute(update(mail_sources).where(mail_sources.c.id == row["id"]).values(**values))
    return get_source(engine, row["id"])


def set_secret(engine: Engine, settings: Settings, source: int | str, secret: str) -> None:
    row = get_source(engine, source)
    if not secret:
        raise SourceError("the password (or token) must not be empty")
    with begin_write(engine) as conn:
        conn.execute(update(mail_sources).where(mail_sources.c.id == row["id"]).values(
            secret=_seal(settings, row["name"], secret), next_attempt_at=None))


def folder_state(engine: Engine, source_id: int, folder: str) -> FolderState | None:
    f = mail_source_folders.c
    with engine.connect() as conn:
        row = conn.execute(select(f.uidvalidity, f.last_uid)
                           .where(f.source_id == source_id, f.folder == folder)).first()
    return None if row is None else FolderState(int(row[0]), int(row[1]))


def folder_states(engine: Engine, source_id: int) -> list[dict[str, Any]]:
    """Each folder's UIDVALIDITY and last UID taken (for `source show`)."""
    f = mail_source_folders.c
    with engine.connect() as conn:
        rows = conn.execute(select(f.folder, f.uidvalidity, f.last_uid, f.updated_at)
                            .where(f.source_id == source_id).order_by(f.folder)).mappings()
        return [dict(r) for r in rows]


def save_folder_state(engine: Engine, source_id: int, folder: str, state: FolderState,
                      taken: int) -> None:
    """Record the last UID taken (after the spool's commit and the server's change)."""
    f = mail_source_folders.c
    with begin_write(engine) as conn:
        done = conn.execute(update(mail_source_folders)
                            .where(f.source_id == source_id, f.folder == folder)
                            .values(uidvalidity=state.uidvalidity, last_uid=state.last_uid,
                                    updated_at=utcnow())).rowcount
        if not done:
            conn.execute(insert(mail_source_folders).values(
                source_id=source_id, folder=folder, uidvalidity=state.uidvalidity,
                last_uid=state.last_uid, updated_at=utcnow()))
        if taken:
            conn.execute(update(mail_sources).where(mail_sources.c.id == source_id)
                         .values(taken=mail_sources.c.taken + taken))


def record_ok(engine: Engine, source_id: int, state: str) -> None:
    """The source works (`state`: idle, polling): clear the error and the back-off."""
    with begin_write(engine) as conn:
        conn.execute(update(mail_sources).where(mail_sources.c.id == source_id).values(
            state=state, last_error=None, failures=0, next_attempt_at=None,
            last_ok_at=utcnow()))


def record_failure(engine: Engine, source_id: int, reason: str,
                   retry_at: dt.datetime) -> int:
    """Back off with `reason` visible; returns the number of failures in a row."""
    with begin_write(engine) as conn:
        conn.execute(update(mail_sources).where(mail_sources.c.id == source_id).values(
            state="backoff", last_error=reason[:1000], failures=mail_sources.c.failures + 1,
            next_attempt_at=retry_at))
        n = conn.execute(select(mail_sources.c.failures)
                         .where(mail_sources.c.id == source_id)).scalar()
    return int(n or 0)


def set_trusted(engine: Engine, source: int | str, trusted: list[str]) -> dict[str, Any]:
    """Replace the authserv-ids whose verdicts count for this source's mail."""
    row = get_source(engine, source)
    ids = _check_trusted(trusted)
    with begin_write(engine) as conn:
        conn.execute(update(mail_sources).where(mail_sources.c.id == row["id"])
                     .values(trusted_authserv_ids=ids))
    return get_source(engine, row["id"])


def record_skipped(engine: Engine, source_id: int, folder: str, uidvalidity: int, uid: int,
                   size: int | None, reason: str, moved_to: str | None) -> None:
    """A message that could not be taken: kept for `source show`, never tried again."""
    with begin_write(engine) as conn:
        conn.execute(insert(mail_source_skipped).values(
            source_id=source_id, folder=folder, uidvalidity=uidvalidity, uid=uid, size=size,
            reason=reason[:1000], moved_to=moved_to, skipped_at=utcnow()))


def skipped(engine: Engine, source_id: int, limit: int = SKIPPED_SHOWN) -> list[dict[str, Any]]:
    """The newest messages that could not be taken, newest first."""
    k = mail_source_skipped.c
    with engine.connect() as conn:
        rows = conn.execute(select(k.folder, k.uidvalidity, k.uid, k.size, k.reason, k.moved_to,
                                   k.skipped_at).where(k.source_id == source_id)
                            .order_by(k.id.desc()).limit(limit)).mappings()
        return [dict(r) for r in rows]
