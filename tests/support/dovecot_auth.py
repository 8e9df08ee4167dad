"""A minimal Dovecot authentication server (protocol 1.2), so Postfix can require SMTP AUTH.

Why: the relay tests need a real smarthost requiring AUTH over TLS. Postfix delegates SASL to
Cyrus or Dovecot; Debian's Postfix reads Cyrus' configuration only from /etc/postfix/sasl
(which tests must not touch), and Dovecot is not installed. Postfix's ``smtpd_sasl_type =
dovecot`` speaks a small line protocol to ``smtpd_sasl_path`` (here ``inet:127.0.0.1:PORT``),
implemented below for PLAIN and LOGIN against one user table. Postfix itself still runs the
SMTP side: it offers AUTH only after STARTTLS (``smtpd_tls_auth_only``) and refuses to relay
without it.

Protocol (https://doc.dovecot.org/developer_manual/design/auth_protocol/): the server greets
with VERSION, MECH lines, SPID, CUID, COOKIE, DONE; the client sends VERSION and CPID, then
``AUTH <id> <mech> service=smtp [resp=<base64>] ...``; the server answers ``OK <id>
user=<name>``, ``FAIL <id>`` or ``CONT <id> <base64 challenge>`` (the client replies
``CONT <id> <base64>``).
"""

from __future__ import annotations

import base64
import os
import socketserver
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["DovecotAuth"]


@dataclass
class _State:
    mech: str
    user: str | None = None
    steps: list[str] = field(default_factory=list)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        auth = self.server.auth
        self.wfile.write(
            b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
            + f"SPID\t{os.getpid()}\nCUID\t1\nCOOKIE\t{'0' * 32}\nDONE\n".encode()
        )
        pending: dict[str, _State] = {}
        for raw in self.rfile:
            parts = raw.decode("utf-8", "replace").rstrip("\n").split("\t")
            if parts[0] == "AUTH" and len(parts) >= 3:
                rid, mech = parts[1], parts[2].upper()
                params = dict(p.split("=", 1) for p in parts[3:] if "=" in p)
                st = pending[rid] = _State(mech)
                auth.requests.append((mech, "secured" in parts[3:]))
                resp = params.get("resp")
                if resp is None:
                    self._cont(rid, b"" if mech == "PLAIN" else b"Username:")
                else:
                    self._step(rid, st, resp, pending)
            elif parts[0] == "CONT" and len(parts) >= 3 and parts[1] in pending:
                self._step(parts[1], pending[parts[1]], parts[2], pending)

    def _cont(self, rid: str, challenge: bytes) -> None:
        self.wfile.write(f"CONT\t{rid}\t{base64.b64encode(challenge).decode()}\n".encode())

    def _step(self, rid: str, st: _State, b64: str, pending: dict[str, _State]) -> None:
        try:
            data = base64.b64decode(b64, validate=True)
        except ValueError:
            return self._done(rid, None, pending)
        if st.mech == "PLAIN":
            fields = data.split(b"\0")
            if len(fields) != 3:
                return self._done(rid, None, pending)
            return self._check(rid, fields[1].decode(), fields[2].decode(), pending)
        st.steps.append(data.decode("utf-8", "replace"))
        if len(st.steps) == 1:
            return self._cont(rid, b"Password:")
        return self._check(rid, st.steps[0], st.steps[1], pending)

    def _check(self, rid: str, user: str, password: str, pending: dict[str, _State]) -> None:
        ok = self.server.auth.users.get(user) == password
        self._done(rid, user if ok else None, pending, tried=user)

    def _done(self, rid: str, user: str | None, pending: dict[str, _State],
              tried: str | None = None) -> None:
        pending.pop(rid, None)
        if user is not None:
            self.server.auth.successes.append(user)
            self.wfile.write(f"OK\t{rid}\tuser={user}\n".encode())
        else:
            self.server.auth.failures.append(tried or "")
            self.wfile.write(f"FAIL\t{rid}\tuser={tried or ''}\n".encode())


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, auth: DovecotAuth) -> None:
        self.auth = auth
        super().__init__(("127.0.0.1", 0), _Handler)


class DovecotAuth:
    """``with DovecotAuth({"user": "pw"}) as a:`` then ``smtpd_sasl_path = a.path``."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        self.requests: list[tuple[str, bool]] = []  # (mechanism, over TLS)
        self.successes: list[str] = []
        self.failures: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        assert self._server is not None
        return f"inet:127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> DovecotAuth:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def postfix_settings(self) -> dict[str, Any]:
        """main.cf parameters for a smarthost requiring AUTH over TLS through this server."""
        return {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.path,
            "smtpd_tls_auth_only": "yes",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_sasl_security_options": "noanonymous",
        }
