"""The IMAP client side of a mailbox source: IMAPClient (blocking), run in a thread of its own.

Why IMAPClient: well kept (4.x, 2026), complete (IDLE, MOVE, UIDPLUS, STARTTLS, XOAUTH2),
parses responses into Python values, and takes our `ssl.SSLContext`, so certificate checks are
ours; aioimaplib would save the thread but parses less and handles STARTTLS less completely.
One connection per source lives in one thread; the event loop only awaits its results.

TLS (issue 19): implicit TLS (993) or STARTTLS, the certificate and host name verified against
the system's trust store or `sources.ca_file`; plaintext only for a source added with
`--security plaintext` (the password then crosses the network in the clear, shown as such).
A server that does not offer STARTTLS on a starttls source is refused, never used in the clear.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailcase.errors import MailcaseError

__all__ = [
    "FAILURE_KINDS",
    "Connection",
    "Fetched",
    "SourceError",
    "TLSFacts",
    "connect",
    "connected",
    "tls_context",
]

# RFC 3501 §6.4.8: BODY.PEEK[] leaves \Seen alone (we set it ourselves, after the commit).
_BODY = b"BODY[]"
_FETCH_ITEMS = [b"BODY.PEEK[]"]
_IDLE_TICK = 1.0  # how often an IDLE wait looks at the stop flag


#: What a failure was about: a fixed set, so it can be a metrics label.
FAILURE_KINDS = ("certificate", "tls", "connection", "login", "folder", "server", "storage",
                 "config")


class SourceError(MailcaseError):
    """A mailbox source failed; the text says why and what to do (shown in `source list`)."""

    def __init__(self, message: str, kind: str = "config") -> None:
        super().__init__(message)
        self.kind = kind if kind in FAILURE_KINDS else "server"


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """The TLS of the IMAP connection, recorded with each message it brought."""

    version: str
    cipher: str
    bits: int | None


@dataclass(frozen=True, slots=True)
class Fetched:
    uid: int
    content: bytes


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify certificate and host name (the default), TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _explain(e: BaseException, host: str, port: int) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"certificate of {host}:{port} not accepted ({e.verify_message}): give its CA "
                "in [sources] ca_file, or fix the host name")
    if isinstance(e, ssl.SSLError):
        return f"TLS with {host}:{port} failed ({e.reason or e}): check --security and --port"
    if isinstance(e, TimeoutError | socket.timeout):
        return f"{host}:{port} did not answer in time"
    if isinstance(e, ConnectionRefusedError):
        return f"{host}:{port} refused the connection: check host and port"
    if isinstance(e, OSError):
        return f"cannot reach {host}:{port}: {e.strerror or e}"
    return f"{host}:{port}: {e}"


def _kind(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return "certificate"
    if isinstance(e, ssl.SSLError):
        return "tls"
    if isinstance(e, OSError):
        return "connection"
    return "server"


class Connection:
    """One logged-in IMAP session (blocking calls: run them in the source's thread)."""

    def __init__(self, client: IMAPClient, tls: TLSFacts | None, server_ip: str) -> None:
        self.client = client
        self.tls = tls
        self.server_ip = server_ip
        self._caps = {c.upper() for c in client.capabilities()}

    def has(self, capability: bytes) -> bool:
        return capability.upper() in self._caps

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()
        with contextlib.suppress(Exception):
            self.client.shutdown()

    def select(self, folder: str) -> tuple[int, int]:
        """Select `folder` read-write: (UIDVALIDITY, message count)."""
        try:
            info = self.client.select_folder(folder)
        except IMAPClientError as e:
            raise SourceError(f"cannot open folder {folder!r}: {_text(e)} (does it exist?)",
                              "folder") from e
        return int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0))

    def count(self, folder: str) -> int:
        """Messages in `folder` (STATUS, without selecting it)."""
        try:
            status = self.client.folder_status(folder, [b"MESSAGES"])
        except IMAPClientError as e:
            raise SourceError(f"cannot open folder {folder!r}: {_text(e)} (does it exist?)",
                              "folder") from e
        return int(status[b"MESSAGES"])

    def search(self, criteria: Sequence[str]) -> list[int]:
        return [int(u) for u in self.client.search(list(criteria))]

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of `uids` (those still there): to bound a batch before its bodies."""
        data = self.client.fetch(list(uids), [b"RFC822.SIZE"])
        return {int(u): int(d.get(b"RFC822.SIZE", 0)) for u, d in data.items()}

    def fetch(self, uids: Sequence[int]) -> list[Fetched]:
        """The full content of `uids` (those still there), without setting \\Seen."""
        data = self.client.fetch(list(uids), _FETCH_ITEMS)
        out = []
        for uid in sorted(data):
            body = data[uid].get(_BODY)
            if isinstance(body, bytes):
                out.append(Fetched(int(uid), body))
        return out

    def after(self, action: str, uids: Sequence[int], move_to: str | None) -> None:
        """Change the messages on the server, once they are in the spool."""
        if not uids:
            return
        ids = list(uids)
        try:
            if action == "seen":
                self.client.add_flags(ids, [b"\\Seen"], silent=True)
            elif action == "move":
                assert move_to is not None
                try:
                    self._move(ids, move_to)
                except IMAPClientError as e:
                    # RFC 3501 §6.4.7: [TRYCREATE] says the target folder does not exist yet.
                    if b"TRYCREATE" not in str(e).encode().upper():
                        raise
                    self.client.create_folder(move_to)
                    self._move(ids, move_to)
            elif action == "delete":
                self._expunge(ids)
            else:
                raise SourceError(f"unknown after-action {action!r}")
        except IMAPClientError as e:
            raise SourceError(f"{action} on the server failed: {_text(e)}", "server") from e

    def _move(self, ids: list[int], folder: str) -> None:
        if self.has(b"MOVE"):  # RFC 6851
            self.client.move(ids, folder)
        else:
            self.client.copy(ids, folder)
            self._expunge(ids)

    def _expunge(self, ids: list[int]) -> None:
        self.client.add_flags(ids, [b"\\Deleted"], silent=True)
        if self.has(b"UIDPLUS"):  # RFC 4315 §2.1: expunge only ours, not others' \Deleted
            self.client.uid_expunge(ids)
        else:
            self.client.expunge()

    def idle_wait(self, seconds: float, stop: threading.Event) -> bool:
        """IDLE (RFC 2177) until the server reports a change, `seconds` pass or `stop` is set.
        True when the server said something (look again at once)."""
        self.client.idle()
        news = False
        try:
            deadline = time.monotonic() + seconds
            while not stop.is_set() and time.monotonic() < deadline:
                if self.client.idle_check(timeout=_IDLE_TICK):
                    news = True
                    break
        finally:
            self.client.idle_done()
        return news


def _text(e: BaseException) -> str:
    s = str(e)
    if s.startswith(("b'", 'b"')):
        s = s[2:-1]
    return s[:300]


def connect(*, host: str, port: int, security: str, username: str, secret: str, auth: str,
            ca_file: Path | None, timeout: float) -> Connection:
    """Connect, secure, authenticate; SourceError with the reason on any failure."""
    ctx = tls_context(ca_file) if security != "plaintext" else None
    try:
        client = IMAPClient(host, port=port, ssl=security == "tls", ssl_context=ctx,
                            timeout=timeout)
    except (OSError, IMAPClientError) as e:
        raise SourceError(_explain(e, host, port), _kind(e)) from e
    try:
        if security == "starttls":
            if b"STARTTLS" not in {c.upper() for c in client.capabilities()}:
                raise SourceError(f"{host}:{port} does not offer STARTTLS: use --security tls "
                                  "(port 993), or plaintext only if you accept it", "tls")
            try:
                client.starttls(ctx)
            except (OSError, IMAPClientError) as e:
                raise SourceError(_explain(e, host, port), _kind(e)) from e
        try:
            if auth == "xoauth2":
                client.oauth2_login(username, secret)
            else:
                client.login(username, secret)
        except LoginError as e:
            raise SourceError(f"login as {username!r} refused: {_text(e)} (check the "
                              "password or token: `mailcase source set-secret`)", "login") from e
        except (OSError, IMAPClientError) as e:
            raise SourceError(_explain(e, host, port), _kind(e)) from e
        sock = client.socket()
        facts = None
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            facts = TLSFacts(sock.version() or "?", cipher[0] if cipher else "?",
                             cipher[2] if cipher else None)
        peer: Any = sock.getpeername()
        return Connection(client, facts, str(peer[0]))
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise


@contextlib.contextmanager
def connected(**kwargs: Any) -> Iterator[Connection]:
    """`connect` as a context manager that logs out on leaving."""
    conn = connect(**kwargs)
    try:
        yield conn
    finally:
        conn.close()
