"""Composing outbound mail: one function from a typed value to RFC 5322 bytes.

Why the stdlib `email` package and not hand-written MIME: it already does RFC 2047 encoded
words for non-ASCII names and subjects, header folding, transfer encodings and multipart
boundaries correctly. What it does not do for us is refuse hostile input, so every field is
cleaned first:

- Any CR or LF (and the other line breaks Python's `str.splitlines` knows, and NUL) in a text
  field becomes a space: a subject, a name, a header value or a template's output can never
  start a header of its own (header injection).
- Addresses are parsed as one addr-spec each; anything else ("a@b, c@d", "x>\\r\\nBcc: …")
  is a `ValueError`, never a second recipient.
- Message-IDs taken from inbound mail (In-Reply-To, References) are kept only when they look
  like one `<left@right>` without spaces; the rest are left out rather than copied.

Output lines end in CRLF; Date, Message-ID and MIME-Version are always present.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as _policy
from email.header import Header
from email.headerregistry import Address
from email.message import MIMEPart
from email.policy import Policy
from email.utils import format_datetime
from typing import Protocol

from mailcase.smtp.address import AddressError, parse_rcpt_to

__all__ = [
    "AttachmentLike",
    "OutgoingEmail",
    "compose",
    "new_message_id",
]

# Every character `str.splitlines` breaks on, plus NUL: none may reach a header line.
_BREAKS = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Other C0 controls (except TAB) are never wanted in a header either.
_CONTROLS = re.compile("[\x01-\x08\x0e-\x1f\x7f]")
# RFC 5322 §3.6.4 msg-id, loosely: "<" left "@" right ">" with no spaces or brackets inside.
_MSGID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
# A header field name: printable ASCII except ":" (RFC 5322 §2.2).
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# Headers compose writes itself: extra_headers may not replace them.
_RESERVED = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "auto-submitted",
    }
)
# Longest Message-ID kept from inbound mail: folded one per line, a line stays far below 998.
_MSGID_MAX = 250
# Longest references list kept: the newest ids matter for threading (RFC 5322 §3.6.4).
_MAX_REFERENCES = 20


class AttachmentLike(Protocol):
    """Anything with a file name, a MIME type and bytes (e.g. `mailcase.mime.Attachment`)."""

    @property
    def filename(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """What an outbound message says; `compose` turns it into bytes.

    `auto_submitted` is the RFC 3834 value ("auto-replied", "auto-generated") or None for mail
    a person asked for. `message_id` is generated when None (pass one to remember it).
    """

    from_addr: str
    from_name: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    text: str = ""
    html: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    attachments: tuple[AttachmentLike, ...] = ()


def new_message_id(domain: str) -> str:
    """A fresh Message-ID, brackets included: 128 random bits at `domain`."""
    host = _one_line(domain).strip().strip(".") or "localhost"
    host = re.sub(r"[^A-Za-z0-9.\-\[\]:]", "", host) or "localhost"
    return f"<{secrets.token_hex(16)}@{host}>"


def compose(email: OutgoingEmail) -> bytes:
    """The message as RFC 5322 bytes with CRLF line endings.

    Raises ValueError for an address that is not one valid mailbox, or when there is no
    recipient at all; every text field is made safe rather than refused.
    """
    from_addr = _address(email.from_addr, email.from_name)
    to = [_address(a) for a in email.to]
    cc = [_address(a) for a in email.cc]
    if not to and not cc:
        raise ValueError("an outbound email needs at least one To or Cc recipient")
    utf8 = any(not a.addr_spec.isascii() for a in [from_addr, *to, *cc])
    # SMTPUTF8 (RFC 6532) only when an address needs it; otherwise RFC 2047 encoded words.
    pol = _policy.SMTPUTF8 if utf8 else _policy.SMTP

    # MIMEPart, not EmailMessage: its sub-parts then carry no MIME-Version of their own.
    msg = MIMEPart(policy=pol)
    msg["From"] = _MailboxHeader("From", [from_addr])
    if to:
        msg["To"] = _MailboxHeader("To", to)
    if cc:
        msg["Cc"] = _MailboxHeader("Cc", cc)
    msg["Subject"] = _TextHeader("Subject", _one_line(email.subject).strip())
    msg["Date"] = format_datetime(datetime.now(UTC))
    message_id = _msgid(email.message_id) if email.message_id else None
    if email.message_id and message_id is None:
        raise ValueError(f"not a Message-ID: {email.message_id!r}")
    msg["Message-ID"] = _IdsHeader("Message-ID", [message_id or new_message_id(from_addr.domain)])
    in_reply_to = _msgid(email.in_reply_to) if email.in_reply_to else None
    if in_reply_to:
        msg["In-Reply-To"] = _IdsHeader("In-Reply-To", [in_reply_to])
    refs = [r for r in (_msgid(x) for x in email.references) if r]
    if in_reply_to and in_reply_to not in refs:
        refs.append(in_reply_to)  # RFC 5322 §3.6.4: parent's References plus its id
    if refs:
        msg["References"] = _IdsHeader("References", refs[-_MAX_REFERENCES:])
    if email.auto_submitted:
        msg["Auto-Submitted"] = _TextHeader("Auto-Submitted", _one_line(email.auto_submitted))
    for name, value in email.extra_headers:
        name = name.strip()
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _RESERVED:
            raise ValueError(f"header {name!r} cannot be set as an extra header")
        msg[name] = _TextHeader(name, _one_line(value).strip())

    msg["MIME-Version"] = "1.0"
    text = _body_text(email.text)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_cte(text))
    if email.html is not None:
        html = _body_text(email.html)
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=_cte(html))
    for att in email.attachments:
        maintype, _, subtype = _one_line(att.content_type).strip().lower().partition("/")
        if not maintype or not subtype or not _FIELD_NAME.fullmatch(maintype + subtype):
            maintype, subtype = "application", "octet-stream"
        filename = _one_line(att.filename).strip().replace('"', "'") or "attachment"
        if maintype == "text":
            # add_attachment treats bytes as binary; keep text parts as declared, base64.
            msg.add_attachment(
                att.data, maintype=maintype, subtype=subtype, filename=filename, cte="base64"
            )
        else:
            msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=filename)
    out = msg.as_bytes(policy=pol)
    return _crlf(out)


def _one_line(value: str) -> str:
    """`value` with every line break and control character as a space (no header injection)."""
    return _CONTROLS.sub(" ", _BREAKS.sub(" ", value))


def _body_text(value: str) -> str:
    """Body text with CRLF/CR/LF unified to LF (the policy writes CRLF) and no NULs."""
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


def _cte(body: str) -> str:
    """7bit for short ASCII lines, else quoted-printable: never 8bit (no 8BITMIME needed)."""
    if body.isascii() and all(len(line) <= 998 for line in body.split("\n")):
        return "7bit"
    return "quoted-printable"


def _address(addr: str, name: str = "") -> Address:
    """One mailbox; ValueError unless `addr` is exactly one addr-spec (RFC 5321/6531 grammar)."""
    if _BREAKS.search(addr) or _CONTROLS.search(addr):
        raise ValueError(f"not an email address (control character): {addr!r}")
    spec = addr.strip()
    if spec.startswith("<") and spec.endswith(">"):
        spec = spec[1:-1].strip()
    try:
        path, params = parse_rcpt_to(f"TO:<{spec}>", smtputf8=True)
    except AddressError:
        raise ValueError(f"not an email address: {addr!r}") from None
    if params or not path.domain or not path.local_part:
        raise ValueError(f"not an email address: {addr!r}")
    local = path.local_part
    if local.startswith('"') and local.endswith('"'):
        local = re.sub(r"\\(.)", r"\1", local[1:-1])  # Address quotes it again when needed
    # username/domain, not addr_spec: the stdlib parser refuses UTF-8 local parts (RFC 6532).
    return Address(display_name=_one_line(name).strip(), username=local, domain=path.domain)


def _msgid(value: str | None) -> str | None:
    """`value` if it is one `<left@right>` msg-id (whitespace removed), else None."""
    if value is None:
        return None
    cleaned = re.sub(r"\s+", "", _one_line(value))
    if cleaned and not cleaned.startswith("<"):
        cleaned = f"<{cleaned}>"
    ok = _MSGID.fullmatch(cleaned) and cleaned.isascii() and len(cleaned) <= _MSGID_MAX
    return cleaned if ok else None


class _IdsHeader(str):
    """A header of msg-ids, folded between ids only.

    The stdlib treats References as unstructured text and turns a long id into RFC 2047
    encoded words when it folds, which no reader matches any more; this value folds itself
    (the policy calls `fold` on any value that has a `name`).
    """

    name: str
    ids: tuple[str, ...]

    def __new__(cls, name: str, ids: list[str]) -> _IdsHeader:
        self = super().__new__(cls, " ".join(ids))
        self.name = name
        self.ids = tuple(ids)
        return self

    def fold(self, *, policy: Policy) -> str:
        limit = policy.max_line_length or 78
        lines = [f"{self.name}:"]
        for mid in self.ids:
            if len(lines[-1]) + 1 + len(mid) > limit and lines[-1] != f"{self.name}:":
                lines.append("")
            lines[-1] += " " + mid
        return policy.linesep.join(lines) + policy.linesep


def _encoded_words(name: str, value: str, policy: Policy) -> str:
    """`value` as RFC 2047 encoded words (UTF-8), folded between words."""
    header = Header(value, charset="utf-8", header_name=name)
    return header.encode(linesep=policy.linesep, maxlinelen=policy.max_line_length or 78)


def _needs_encoding(value: str) -> bool:
    """Non-ASCII, or text a reader would decode ("=?…?="), or a word too long to fold."""
    return not value.isascii() or "=?" in value or any(len(w) > 900 for w in value.split(" "))


def _fold_at_spaces(first: str, value: str, limit: int, linesep: str) -> str:
    """``first`` + value, folded at spaces (unfolding gives back exactly `value`)."""
    lines = [first]
    for i, word in enumerate(value.split(" ")):
        piece = word if i == 0 else " " + word
        if i and len(lines[-1]) + len(piece) > limit and lines[-1].strip():
            lines.append(piece)
        else:
            lines[-1] += piece
    return linesep.join(lines)


class _TextHeader(str):
    """An unstructured header written by us, never parsed by the stdlib.

    Why: the stdlib's header parser DECODES RFC 2047 encoded words found in a value it is
    given, so a subject such as ``=?utf-8?q?=0D=0ABcc:_x@y?=`` would come out as a real CRLF
    and a Bcc header (header injection through encoded words). Here, text that looks like an
    encoded word is itself encoded, so readers show it literally.
    """

    name: str

    def __new__(cls, name: str, value: str) -> _TextHeader:
        self = super().__new__(cls, value)
        self.name = name
        return self

    def fold(self, *, policy: Policy) -> str:
        value = str(self)
        limit = policy.max_line_length or 78
        if not value:
            return f"{self.name}:{policy.linesep}"
        if _needs_encoding(value):
            body = _encoded_words(self.name, value, policy)
            return f"{self.name}: {body}{policy.linesep}"
        return _fold_at_spaces(f"{self.name}: ", value, limit, policy.linesep) + policy.linesep


class _MailboxHeader(str):
    """From/To/Cc written by us: display names quoted or encoded, never parsed again."""

    name: str
    mailboxes: tuple[Address, ...]

    def __new__(cls, name: str, mailboxes: list[Address]) -> _MailboxHeader:
        self = super().__new__(cls, ", ".join(str(m) for m in mailboxes))
        self.name = name
        self.mailboxes = tuple(mailboxes)
        return self

    def fold(self, *, policy: Policy) -> str:
        limit = policy.max_line_length or 78
        parts: list[str] = []
        for m in self.mailboxes:
            display = m.display_name
            if not display:
                parts.append(m.addr_spec)
                continue
            if _needs_encoding(display) or not display.isprintable():
                phrase = _encoded_words(self.name, display, policy)
            else:  # RFC 5322 §3.2.4 quoted-string
                phrase = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(f"{phrase} <{m.addr_spec}>")
        lines = [f"{self.name}:"]
        for i, part in enumerate(parts):
            piece = (" " if i == 0 else ", ") + part
            if i and len(lines[-1]) + len(piece) > limit:
                lines[-1] += ","
                lines.append(" " + part)
            else:
                lines[-1] += piece
        return policy.linesep.join(lines) + policy.linesep


def _crlf(data: bytes) -> bytes:
    """Every line ending CRLF (the SMTP policy already does; bodies are checked again)."""
    return re.sub(rb"\r?\n", b"\r\n", data.replace(b"\r\n", b"\n"))
