"""The SMTP client: aiosmtplib wrapped so that every attempt ends as a typed result.

Every recipient of every attempt gets `Delivered`, `Transient` or `Permanent`, each with the
TLS facts of the connection (`DeliveryTLSFacts`, or None for plaintext), the remote host and
address, the stage of a failure (connect, ehlo, starttls, auth, mail, rcpt, data) and the reply.

A `Session` is one connection; it can carry several messages (`send` again after a
transaction) so that a backlog for one destination does not pay TCP and TLS set-up per
message. The TLS decisions come from `mailcase.tls.outbound` (pure); this module only acts on
them:

- the socket is connected here, to the address the route chose, and aiosmtplib is handed the
  socket with the *host name* (MX name or relay name): that name is what the certificate is
  checked against, and no second DNS lookup outside mailcase's resolver happens;
- a refused TLS policy ends the session with QUIT before MAIL FROM: no content is sent;
- credentials (AUTH PLAIN/LOGIN) are sent only over a TLS session, whatever the caller asks;
  they never appear in a result, a log line or an exception text;
- bare CR/LF were normalised at enqueue; aiosmtplib dot-stuffs (RFC 5321 §4.5.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPResponseException

from mailcase import eventloop
from mailcase.tls.outbound import (
    after_handshake,
    on_ehlo,
    plaintext_fallback_allowed,
    verifies,
)

__all__ = [
    "Credentials",
    "Delivered",
    "Permanent",
    "Result",
    "Session",
    "SessionFailure",
    "DeliveryTLSFacts",
    "Target",
    "Transient",
    "client_context",
]

Stage = Literal["route", "connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data"]


@dataclass(frozen=True, slots=True)
class DeliveryTLSFacts:
    """The TLS facts of one connection. `verified_by` is "CA" when the chain and host name
    were checked against the trust store (MTA-STS and DANE will add theirs)."""

    version: str
    cipher: str
    verified: bool
    verified_by: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """SMTP AUTH for a relay. `repr` never shows the password."""

    mechanism: Literal["PLAIN", "LOGIN"]
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one session goes: `host` is the name certificates are checked against."""

    host: str
    ip: str
    port: int
    tls_mode: str
    implicit_tls: bool = False
    relay: str | None = None
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class _Outcome:
    code: int | None
    text: str
    host: str | None
    ip: str | None
    port: int | None
    tls: DeliveryTLSFacts | None
    relay: str | None
    tls_mode: str | None
    #: Why this session went on in plaintext after STARTTLS failed (`preferred`), else None.
    tls_fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Delivered(_Outcome):
    """The server took responsibility (250 after the final dot)."""

    stage: Stage | None = None


@dataclass(frozen=True, slots=True)
class Transient(_Outcome):
    """Try again later (4xx, a network failure, a TLS policy not met)."""

    stage: Stage = "connect"


@dataclass(frozen=True, slots=True)
class Permanent(_Outcome):
    """Do not try again (5xx, a null MX, an address the server cannot take)."""

    stage: Stage = "connect"


Result = Delivered | Transient | Permanent


class _PlaintextFallback(Exception):  # noqa: N818 - a signal inside `Session.open`, no error
    """STARTTLS failed and the policy lets this server be tried again in plaintext."""


class SessionFailure(Exception):  # noqa: N818 - 'Failure' says what it is
    """The session could not be set up or broke; `result` says how for every recipient."""

    def __init__(self, result: Transient | Permanent) -> None:
        super().__init__(f"{result.stage}: {result.code or ''} {result.text}".strip())
        self.result = result


_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def client_context(*, verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """A client context: chain and host name checked (`verify`) or nothing checked.

    With `ca_file`, that bundle replaces the system trust store (tests trust a test CA).
    Contexts are built once and shared: loading the system trust store costs ~40 ms, and a
    shared context also lets OpenSSL resume sessions.
    """
    key = (verify, str(ca_file) if ca_file else None)
    ctx = _CONTEXTS.get(key)
    if ctx is not None:
        return ctx
    if verify:
        ctx = ssl.create_default_context(cafile=key[1])
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _CONTEXTS[key] = ctx
    return ctx


def _verify_error(exc: BaseException) -> str:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or e)
        if isinstance(e, ssl.SSLError):
            return str(e.reason or e)
        e = e.__cause__ or e.__context__
    return str(exc) or type(exc).__name__


def _clean(text: str) -> str:
    return " ".join(text.split())[:1000]


class Session:
    """One SMTP connection to `target`; `open`, then `send` any number of times, `close`."""

    def __init__(
        self,
        target: Target,
        *,
        helo: str,
        ca_file: Path | None = None,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
    ) -> None:
        self.target = target
        self.helo = helo
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.tls: DeliveryTLSFacts | None = None
        self.smtp: aiosmtplib.SMTP | None = None
        self._sock: socket.socket | None = None
        self.alive = False
        self.sent = 0
        #: Set when STARTTLS failed and the session went on in plaintext (`preferred`).
        self.tls_fallback: str | None = None

    # -- results --------------------------------------------------------------------------

    def _fields(self, code: int | None, text: str) -> dict[str, object]:
        t = self.target
        return {
            "code": code, "text": _clean(text), "host": t.host, "ip": t.ip, "port": t.port,
            "tls": self.tls, "relay": t.relay, "tls_mode": t.tls_mode,
            "tls_fallback": self.tls_fallback,
        }

    def _fail(self, stage: Stage, code: int | None, text: str, *, permanent: bool = False
              ) -> Transient | Permanent:
        if permanent:
            return Permanent(stage=stage, **self._fields(code, text))  # type: ignore[arg-type]
        return Transient(stage=stage, **self._fields(code, text))  # type: ignore[arg-type]

    def _reply(self, stage: Stage, exc: SMTPResponseException) -> Transient | Permanent:
        return self._fail(stage, exc.code, exc.message, permanent=500 <= exc.code < 600)

    # -- set-up ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, greet, STARTTLS as the policy says, AUTH; raises SessionFailure.

        When STARTTLS fails and `plaintext_fallback_allowed` (``preferred``), the same server
        is connected to once more without STARTTLS: the failed handshake left the first
        connection unusable."""
        try:
            await self._open()
        except _PlaintextFallback as e:
            self.abort()
            self.tls_fallback = str(e)
            await self._open()

    async def _open(self) -> None:
        t = self.target
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(t.ip).version == 6 else socket.AF_INET
        except ValueError:
            raise SessionFailure(self._fail("connect", None, f"bad address {t.ip!r}")) from None
        sock = self._sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await eventloop.wait_for(loop.sock_connect(sock, (t.ip, t.port)), self.connect_timeout)
        except BaseException as e:
            sock.close()
            self._sock = None
            if not isinstance(e, OSError | TimeoutError):
                raise
            why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
            raise SessionFailure(self._fail("connect", None, f"connect to {t.ip}:{t.port}: {why}")
                                 ) from None
        verify = verifies(t.tls_mode)
        ctx = client_context(verify=verify, ca_file=self.ca_file)
        smtp = aiosmtplib.SMTP(
            hostname=t.host, sock=sock, local_hostname=self.helo, timeout=self.command_timeout,
            use_tls=t.implicit_tls, start_tls=False, tls_context=ctx,
        )
        self.smtp = smtp
        try:
            await self._greet(smtp, ctx, verify)
        except _PlaintextFallback:
            raise
        except SessionFailure:
            await self.close()
            raise
        except BaseException:
            self.abort()
            raise
        self.alive = True

    async def _greet(self, smtp: aiosmtplib.SMTP, ctx: ssl.SSLContext, verify: bool) -> None:
        t = self.target
        try:
            await eventloop.wait_for(smtp.connect(), self.connect_timeout + 5)
        except SMTPResponseException as e:  # a 4xx/5xx greeting
            raise SessionFailure(self._reply("connect", e)) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as e:
            if t.implicit_tls:
                d = after_handshake(t.tls_mode, verified=False, error=_verify_error(e))
                raise SessionFailure(self._fail("starttls", None, d.reason)) from None
            raise SessionFailure(self._fail("connect", None, f"greeting: {_verify_error(e)}")
                                 ) from None
        if t.implicit_tls:
            self._note_tls(smtp, verify)
        await self._ehlo(smtp)
        if not t.implicit_tls:
            decision = on_ehlo(t.tls_mode, starttls_offered=smtp.supports_extension("starttls"))
            if decision.action == "refuse":
                raise SessionFailure(self._fail("starttls", None, decision.reason))
            if decision.action == "starttls" and self.tls_fallback is None:
                try:
                    await smtp.starttls(server_hostname=t.host, tls_context=ctx)
                except SMTPResponseException as e:
                    # Offered, then refused: plaintext only where the policy allows it.
                    if plaintext_fallback_allowed(t.tls_mode):
                        raise _PlaintextFallback(
                            f"STARTTLS refused ({t.tls_mode}): {e.code} {_clean(e.message)}; "
                            "retried in plaintext"
                        ) from None
                    raise SessionFailure(self._reply("starttls", e)) from None
                except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as e:
                    d = after_handshake(t.tls_mode, verified=False, error=_verify_error(e))
                    if d.action == "fallback":
                        raise _PlaintextFallback(d.reason) from None
                    raise SessionFailure(self._fail("starttls", None, d.reason)) from None
                self._note_tls(smtp, verify)
                await self._ehlo(smtp)
        if t.credentials is not None:
            await self._auth(smtp, t.credentials)

    def _note_tls(self, smtp: aiosmtplib.SMTP, verify: bool) -> None:
        obj = smtp.get_transport_info("ssl_object")
        cipher = obj.cipher() if obj is not None else None
        self.tls = DeliveryTLSFacts(
            version=(obj.version() if obj is not None else None) or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            verified=verify,
            verified_by="CA" if verify else None,
        )
        d = after_handshake(self.target.tls_mode, verified=verify)
        if d.action == "refuse":  # pragma: no cover - verify modes fail in the handshake
            raise SessionFailure(self._fail("starttls", None, d.reason))

    async def _ehlo(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except SMTPResponseException as e:
            if self.tls is not None or self.target.tls_mode in ("required", "required_verify"):
                raise SessionFailure(self._reply("ehlo", e)) from None
            try:  # RFC 5321 §3.2: a server that does not know EHLO may know HELO
                await smtp.helo()
            except SMTPResponseException as e2:
                raise SessionFailure(self._reply("ehlo", e2)) from None
            except (aiosmtplib.SMTPException, OSError) as e2:
                raise SessionFailure(self._fail("ehlo", None, _verify_error(e2))) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise SessionFailure(self._fail("ehlo", None, _verify_error(e))) from None

    async def _auth(self, smtp: aiosmtplib.SMTP, cred: Credentials) -> None:
        if self.tls is None:
            # Never reached through the relay settings (AUTH forces required_verify); kept as
            # the last guard: credentials do not go over plaintext.
            raise SessionFailure(self._fail("auth", None, "AUTH needs TLS; credentials not sent"))
        try:
            if cred.mechanism == "LOGIN":
                await smtp.auth_login(cred.username, cred.password)
            else:
                await smtp.auth_plain(cred.username, cred.password)
        except SMTPResponseException as e:
            # Postfix's smtp_sasl_auth_soft_bounce: an AUTH failure defers, it may be fixed.
            raise SessionFailure(self._fail("auth", e.code, e.message)) from None
        except (aiosmtplib.SMTPException, OSError) as e:
            raise SessionFailure(self._fail("auth", None, _verify_error(e))) from None

    # -- transactions ---------------------------------------------------------------------

    async def send(
        self, mail_from: str, rcpt_to: list[str], content: bytes
    ) -> dict[str, Result]:
        """One transaction; a result for every recipient. A broken connection makes `alive`
        False (the caller opens a new session for what is left)."""
        smtp = self.smtp
        assert smtp is not None and self.alive
        results: dict[str, Result] = {}
        utf8 = not (mail_from.isascii() and all(r.isascii() for r in rcpt_to))
        options: list[str] = []
        if utf8:
            if not smtp.supports_extension("smtputf8"):
                r = self._fail("mail", None, "the server does not support SMTPUTF8, "
                               "needed for an internationalised address", permanent=True)
                return dict.fromkeys(rcpt_to, r)
            options.append("SMTPUTF8")
        if not content.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(content)}")
        stage: Stage = "mail"
        try:
            try:
                await smtp.mail(mail_from, options=options)
            except SMTPResponseException as e:
                await self._rset()
                return dict.fromkeys(rcpt_to, self._reply("mail", e))
            stage = "rcpt"
            accepted: list[str] = []
            for rcpt in rcpt_to:
                try:
                    await smtp.rcpt(rcpt)
                    accepted.append(rcpt)
                except SMTPResponseException as e:
                    results[rcpt] = self._reply("rcpt", e)
            if not accepted:
                await self._rset()
                return results
            stage = "data"
            try:
                resp = await smtp.data(content)
            except SMTPResponseException as e:
                r = self._reply("data", e)
                results.update(dict.fromkeys(accepted, r))
                return results
            ok = Delivered(**self._fields(resp.code, resp.message))  # type: ignore[arg-type]
            results.update(dict.fromkeys(accepted, ok))
            self.sent += 1
            return results
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            self.abort()
            r = self._fail(stage, None, f"connection lost: {_verify_error(e)}")
            for rcpt in rcpt_to:
                results.setdefault(rcpt, r)
            return results

    async def _rset(self) -> None:
        assert self.smtp is not None
        try:
            await self.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self.abort()

    async def close(self) -> None:
        """QUIT (politely, briefly), then close."""
        smtp, self.smtp, self.alive = self.smtp, None, False
        sock, self._sock = self._sock, None
        transport = smtp.transport if smtp is not None else None
        if smtp is not None:
            if smtp.is_connected:
                with contextlib.suppress(Exception):
                    await eventloop.wait_for(smtp.quit(), 5)
            with contextlib.suppress(Exception):
                smtp.close()
        self._drop(transport, sock)

    def abort(self) -> None:
        """Close now, without QUIT (cancellation, errors)."""
        smtp, self.smtp, self.alive = self.smtp, None, False
        sock, self._sock = self._sock, None
        transport = smtp.transport if smtp is not None else None
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.close()
        self._drop(transport, sock)

    @staticmethod
    def _drop(transport: asyncio.BaseTransport | None, sock: socket.socket | None) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            # Ends a TLS session at once too: no waiting up to 30 s for the peer's
            # close_notify after QUIT (asyncio's default), which also left the socket open.
            transport.abort()
        elif sock is not None:
            sock.close()  # the greeting or handshake failed before a transport kept it
