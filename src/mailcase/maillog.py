"""Postfix-style `maillog` lines: one line per mail event, greppable by queue id.

    2026-11-26T18:00:00.123Z mailcase/smtpd: 3F2A9C0B1D7E: client=[127.0.0.1] helo=mx.example
    … mailcase/smtpd: 3F2A9C0B1D7E: from=<a@b>, to=<c@d>, size=2048, tls=TLSv1.3:…, status=queued

A line is `key=value` fields joined by ", ". An ordinary value is written as it is, for
people to read; a value that could be mistaken for something else (it contains ", ", starts
with a double quote, or holds a character that is not printable: CR, LF, NUL, other control
characters, U+2028, bidi overrides…) is written as a JSON string instead. So a sender of
`<"x>, status=sent, to=<ceo"@x.test>` cannot add a `status=` field to the line (issue 11), and
`parse_line` reads back exactly the fields that were written. Secrets never pass through here:
nothing that logs calls these with credentials.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mailcase.filemodes import PRIVATE_FILE, private_dir, tighten

__all__ = [
    "accepted",
    "automation",
    "bounce",
    "bounced",
    "case_event",
    "configure",
    "connect",
    "deferred",
    "deferred_processing",
    "delivered",
    "disconnect",
    "event",
    "flush",
    "parse_line",
    "processed",
    "quarantined",
    "rejected",
]

_SEP = ", "


class _Sink:
    """Where the lines go: buffered, written whole by one `os.write` per flush.

    Through `logging` a line cost about 70 µs (a record, a handler lock, a flush and a write
    system call per line), a sixth of the CPU an accepted message costs with two lines each.
    Here a line is appended to a list; a flusher thread writes what gathered every
    `_FLUSH_SECONDS` (and at once past `_MAX_PENDING` lines, and at exit), like Postfix's
    postlogd writing for its daemons. Whole lines in one write also keep the lines of several
    processes appending to one file from interleaving. The maillog is for people reading it;
    what must survive a crash is in the email log in the database.
    """

    def __init__(self, fd: int, owned: bool) -> None:
        self.fd, self.owned = fd, owned
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = -1
        self._closed = False

    def write(self, line: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._pid != os.getpid():  # first line, or a forked process: start a flusher
                if self._pid != -1:
                    self._lines.clear()  # the parent's pending lines are the parent's to write
                self._pid = os.getpid()
                threading.Thread(target=self._flusher, name="mailcase-maillog",
                                 daemon=True).start()
            self._lines.append(line)
            if len(self._lines) >= _MAX_PENDING:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "replace")
        self._lines.clear()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            pass  # a full disk or a closed stderr must not stop the mail flowing

    def _flusher(self) -> None:
        pid = os.getpid()
        while not self._closed and os.getpid() == pid:
            self._wake.wait(_FLUSH_SECONDS)
            self.flush()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._closed = True
            self._wake.set()
            if self.owned:
                os.close(self.fd)


_FLUSH_SECONDS = 0.2
_MAX_PENDING = 512
_sink: _Sink | None = None
_stamp: tuple[int, str] = (-1, "")


def _close_sink() -> None:
    global _sink  # the process's one maillog target
    sink, _sink = _sink, None
    if sink is not None:
        sink.close()


atexit.register(_close_sink)


def configure(target: str) -> None:
    """`stderr`, `none` or a file path (appended to)."""
    global _sink  # noqa: PLW0603 - the process's one maillog target
    _close_sink()
    if target == "none":
        return  # no sink: `event` returns before formatting anything
    if target == "stderr":
        _sink = _Sink(sys.stderr.fileno(), owned=False)
        return
    private_dir(Path(target).parent)
    # Mail addresses and hosts are personal data: the log is for our user only (0600).
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    tighten(Path(target))
    _sink = _Sink(fd, owned=True)


def flush() -> None:
    """Write out the lines gathered so far (tests, shutdown)."""
    if _sink is not None:
        _sink.flush()


def _escape_unprintable(m: re.Match[str]) -> str:
    c = m.group()
    code = ord(c)
    if code > 0xFFFF:  # JSON has no \U: a surrogate pair, as json.loads expects
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # ASCII printable are always safe; others checked


def _unprintable(m: re.Match[str]) -> str:
    c = m.group()
    return c if c.isprintable() else _escape_unprintable(m)


def _quote(s: str) -> str:
    """A JSON string, with every character that is not printable escaped (json.dumps leaves
    DEL, U+2028, bidi controls and lone surrogates as they are when not ensuring ASCII)."""
    q = json.dumps(s, ensure_ascii=False)
    return q if q.isprintable() else _UNPRINTABLE.sub(_unprintable, q)


def _clean(value: object) -> str:
    s = value if type(value) is str else str(value)
    # Three C scans that pass for almost every value; only then is the value quoted.
    if s.isprintable() and _SEP not in s and not s.startswith('"'):
        return s
    return _quote(s)


def _now() -> str:
    """UTC time with milliseconds; the part up to the second is formatted once a second."""
    global _stamp  # noqa: PLW0603 - a one-entry cache
    t = time.time()
    second = int(t)
    cached = _stamp
    if cached[0] != second:
        cached = _stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((t - second) * 1000):03d}Z"


def event(program: str, queue_id: str | None, **fields: object) -> None:
    """Write one line; `fields` keep their order, None values are left out."""
    sink = _sink
    if sink is None:
        return
    written = [f"{k}={v}" for k, v in fields.items() if v is not None]
    parts = _SEP.join(written)
    # One check of the whole line instead of one per value: every value is printable, none
    # holds ", " (a separator more than the fields need) and none starts with a quote (`="`).
    # Almost every line passes; otherwise the values are written again, quoted where needed.
    if not parts.isprintable() or parts.count(_SEP) >= len(written) or '="' in parts:
        parts = _SEP.join([f"{k}={_clean(v)}" for k, v in fields.items() if v is not None])
    sink.write(f"{_now()} mailcase/{program}: {queue_id or 'NOQUEUE'}: {parts}\n")


@dataclass(frozen=True, slots=True)
class Line:
    """One maillog line, read back: `fields` in the order they were written."""

    time: str
    program: str
    queue_id: str | None  # None for NOQUEUE
    fields: tuple[tuple[str, str], ...]


_PREFIX = re.compile(r"(\S+) mailcase/([\w-]+): (\w+): ")
_JSON = json.JSONDecoder()


def parse_line(line: str) -> Line:
    """Read a line that `event` wrote (tests, tools): each field's value exactly as it was
    given (as a string). ValueError if the line is not one of ours."""
    line = line.removesuffix("\n")
    m = _PREFIX.match(line)
    if m is None:
        raise ValueError(f"not a maillog line: {line[:80]!r}")
    fields: list[tuple[str, str]] = []
    pos, end = m.end(), len(line)
    while pos < end:
        eq = line.find("=", pos)
        if eq < 0:
            raise ValueError(f"field without '=' at {pos}: {line[pos:pos + 40]!r}")
        key = line[pos:eq]
        pos = eq + 1
        if line.startswith('"', pos):
            value, pos = _JSON.raw_decode(line, pos)
            if pos < end and not line.startswith(_SEP, pos):
                raise ValueError(f"text after the quoted value of {key!r} at {pos}")
        else:
            stop = line.find(_SEP, pos)
            stop = end if stop < 0 else stop
            value, pos = line[pos:stop], stop
        fields.append((key, value))
        if pos < end:
            pos += len(_SEP)
    queue_id = m.group(3)
    return Line(m.group(1), m.group(2), None if queue_id == "NOQUEUE" else queue_id,
                tuple(fields))


def connect(client_ip: str, port: int) -> None:
    event("smtpd", None, connect=f"[{client_ip}]:{port}")


def disconnect(client_ip: str, reason: str) -> None:
    event("smtpd", None, disconnect=f"[{client_ip}]", reason=reason)


def accepted(
    queue_id: str,
    *,
    client_ip: str,
    helo: str | None,
    mail_from: str,
    rcpt_to: list[str],
    size: int,
    tls: str,
    message_id: str | None,
) -> None:
    event(
        "smtpd",
        queue_id,
        client=f"[{client_ip}]",
        helo=helo,
        **{"from": f"<{mail_from}>"},
        to=",".join(f"<{r}>" for r in rcpt_to),
        size=size,
        tls=tls,
        message_id=message_id,
        status="queued",
    )


def rejected(
    *,
    stage: str,
    client_ip: str,
    helo: str | None,
    mail_from: str | None,
    rcpt_to: list[str],
    reply: str,
    reason: str,
) -> None:
    event(
        "smtpd",
        None,
        reject=stage,
        client=f"[{client_ip}]",
        helo=helo,
        **{"from": None if mail_from is None else f"<{mail_from}>"},
        to=",".join(f"<{r}>" for r in rcpt_to) or None,
        reply=reply,
        reason=reason,
    )


def processed(queue_id: str, *, destination: str) -> None:
    event("pipeline", queue_id, status="processed", destination=destination)


def quarantined(queue_id: str, *, error: str) -> None:
    event("pipeline", queue_id, status="quarantined", error=error)


def deferred_processing(queue_id: str, *, error: str) -> None:
    """The pipeline left a message for a later attempt (e.g. DNS temporarily failing)."""
    event("pipeline", queue_id, status="deferred", error=error)


def case_event(
    queue_id: str | None,
    *,
    action: str,
    case: str | None = None,
    routing: str | None = None,
    detail: str | None = None,
) -> None:
    """Email-to-Case: a case created, an email attached, a sender refused, a duplicate…"""
    event("cases", queue_id, action=action, case=case, routing=routing, detail=detail)


def bounce(
    queue_id: str | None,
    *,
    recipient: str,
    status: str | None,
    kind: str,
    source: str,
    remote_mta: str | None = None,
) -> None:
    """A bounce of one of our messages was recorded (hard ones suppress the address)."""
    event(
        "bounce", queue_id, to=f"<{recipient}>", status=status or "-", kind=kind,
        source=source, relay=remote_mta,
        suppressed="yes" if kind == "hard" else None,
    )


def automation(queue_id: str | None, *, what: str, **fields: object) -> None:
    """Email-to-Case automation: a loop stopped, an auto-reply sent or suppressed, a limit hit."""
    event("automation", queue_id, event=what, **fields)


def _outbound(
    status: str,
    queue_id: str,
    *,
    to: str,
    relay: str,
    delay: float,
    attempt: int,
    tls: str,
    reply: str,
) -> None:
    # Postfix's smtp lines: "to=<x>, relay=mx[ip]:25, delay=.., dsn=.., status=sent (reply)"
    event(
        "smtp",
        queue_id,
        to=f"<{to}>",
        relay=relay,
        delay=f"{delay:.2f}",
        attempt=attempt,
        tls=tls,
        status=f"{status} ({reply})",
    )


def delivered(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
              reply: str) -> None:
    """An outbound recipient delivered (the remote server said 250 after the final dot)."""
    _outbound("sent", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)


def deferred(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
             reply: str) -> None:
    """An outbound attempt failed transiently; the recipient stays queued for a retry."""
    _outbound("deferred", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)


def bounced(queue_id: str, *, to: str, relay: str, delay: float, attempt: int, tls: str,
            reply: str) -> None:
    """An outbound recipient failed permanently (or its queue time ran out)."""
    _outbound("bounced", queue_id, to=to, relay=relay, delay=delay, attempt=attempt, tls=tls,
              reply=reply)
