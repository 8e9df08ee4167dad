"""`parse_message`: the bytes of an accepted message in, a typed `InboundEmail` out.

Why the stdlib `email` package and not a parser of our own: MIME in the wild is decades of
broken mailers, and `email.feedparser` has absorbed them (missing boundaries, bad base64,
uuencode, 8-bit headers, RFC 2231 continuations) with a defect list instead of exceptions;
writing that again would mean re-learning every case it already handles. It is used with a
guard, because its modern header layer is the fragile part: `_GuardedPolicy` is
`email.policy.default` except that a header value that is huge or deeply nested (where the
stdlib parser is superlinear or hits RecursionError) or that makes the parser raise is handed
back as a plain string, which `Message`'s own methods (`get_content_type`, `get_param`,
`get_filename`) handle. Header values for people (subject, names) are decoded in `fields.py`
with our charset fallbacks; MIME structure, transfer encodings and RFC 2231 come from the stdlib.

Rules (Salesforce Email-to-Case, REFERENCE.md, and issue 3):
- text body: the text/plain body parts, in order; from the HTML (converted) when there is none;
  cut at `max_text` characters (131 072) with `text_truncated`. The HTML is bounded first
  (`htmlbound`: `max_html_input` characters, `max_html_depth` nesting; issue 11), then
  sanitised (nh3) and cut the same way (`html_truncated`).
- headers: (name, value) in order, unfolded, at most `max_headers` characters (32 000) in
  total counting `name: value` lines; whole headers only; `headers_truncated` when cut.
- a part that cannot be read (binary bytes in a text part, a failing TNEF, a part that makes
  any step raise) becomes an application/octet-stream attachment plus a `Defect`; the rest of
  the message is still parsed. `parse_message` itself never raises on any input.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import EmailPolicy, compat32
from email.utils import collapse_rfc2231_value
from functools import lru_cache
from html import unescape as _unescape
from io import BytesIO
from typing import Any
from urllib.parse import unquote

from mailcase.mime.charset import decode_text, looks_binary, repair_surrogates
from mailcase.mime.fields import (
    decode_words,
    header_text,
    msg_id,
    msg_id_list,
    parse_addresses,
    parse_date,
    unfold,
)
from mailcase.mime.headers import message_id as scan_message_id
from mailcase.mime.html import html_to_text, sanitize_html
from mailcase.mime.htmlbound import bound_html
from mailcase.mime.ical import parse_calendar
from mailcase.mime.model import (
    Address,
    Attachment,
    AutoSubmission,
    CalendarInfo,
    Defect,
    DeliveryReport,
    InboundEmail,
)
from mailcase.mime.report import auto_signals, parse_delivery_status
from mailcase.mime.tnef import is_tnef, unpack_tnef

__all__ = ["MAX_HEADERS", "MAX_HTML_DEPTH", "MAX_HTML_INPUT", "MAX_TEXT", "parse_message"]

MAX_TEXT = 131_072  # Salesforce Email-to-Case: body text cut at 131 072 characters
MAX_HEADERS = 32_000  # Salesforce Email-to-Case: headers cut at 32 000 characters
#: HTML characters read before sanitising (issue 11): the sanitiser's cost grows with size x
#: nesting; the sanitised HTML is cut to MAX_TEXT anyway, styling markup takes a few times that.
MAX_HTML_INPUT = 4 * MAX_TEXT
#: Nesting depth of HTML elements kept before sanitising; deeper start tags are dropped (their
#: text stays). Browsers stop nesting at 512 (Chromium's parser); real mail stays far below.
MAX_HTML_DEPTH = 256

_MAX_DEPTH = 32  # MIME nesting we follow; deeper parts are reported and skipped
_MAX_PARTS = 1000
_MAX_DEFECTS = 100
_MAX_FILENAME = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CID_REF = re.compile(r"""cid:([^"'\s<>)]+)""", re.IGNORECASE)
_CTYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_NEWLINES = re.compile(r"\r\n?")
_UNSAFE_NAME = re.compile(r'[:*?"<>|]')  # not allowed in Windows file names


def _plain_value(value: str) -> bool:
    """Whether the stdlib header parser is quick and safe on this value (see module doc)."""
    return (
        len(value) <= 2000
        and value.count("(") <= 8
        and value.count('"') <= 32
        and value.count("\\") <= 16
        and value.count("=?") <= 16
    )


@lru_cache(maxsize=512)
def _parsed_header(name: str, value: str) -> Any:
    """The header object for (name, value), memoised: `Message.get_content_type()` and
    friends fetch (and so re-parse) Content-Type many times per part; header objects are
    immutable, so one parse per distinct value is enough (measured: 60% of parse time before)."""
    if not _plain_value(value):
        return unfold(value)
    try:
        return EmailPolicy.header_fetch_parse(_POLICY, name, value)
    except Exception:  # noqa: BLE001 - bugs in _header_value_parser on odd input
        return unfold(value)


class _GuardedPolicy(EmailPolicy):
    """`email.policy.default`, but a header it cannot parse quickly is kept as a plain str."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value)


_POLICY = _GuardedPolicy()
_OUT_POLICY = compat32.clone(linesep="\r\n", max_line_length=0)


@dataclass
class _Pending:
    """An attachment before we know whether the HTML references it (for `inline`)."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None
    disposition: str | None
    charset: str | None
    part: str


@dataclass
class _State:
    """What the walk over the MIME tree collects."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    calendars: list[CalendarInfo] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)
    tnef_text: str | None = None
    tnef_html: str | None = None
    dsn_text: str | None = None
    dsn_original_headers: str | None = None
    parts_seen: int = 0

    def defect(self, part: str, kind: str, detail: str) -> None:
        if len(self.defects) < _MAX_DEFECTS:
            self.defects.append(Defect(part, kind, detail[:300]))


# --- guarded accessors on email.message.Message (work with header objects and plain strs) --


def _raw_header(part: Message, name: str) -> str | None:
    wanted = name.lower()
    for key, value in part.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:  # noqa: BLE001 - stdlib parser bugs on odd input: the safe default
        return "application/octet-stream"
    return ctype if _CTYPE.match(ctype) else "application/octet-stream"


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
    try:
        value = part.get_param(name, header=header)
    except Exception:  # noqa: BLE001 - stdlib parser bugs on odd input: the parameter reads as absent
        return None
    if value is None:
        return None
    try:
        text = collapse_rfc2231_value(value)
    except Exception:  # noqa: BLE001 - an undecodable RFC 2231 value reads as absent
        return None
    return repair_surrogates(str(text)).strip() or None


def _disposition(part: Message) -> str | None:
    try:
        value = part.get_content_disposition()
    except Exception:  # noqa: BLE001 - stdlib parser bugs on odd input: no disposition
        return None
    return value if value in {"inline", "attachment"} else None


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - stdlib parser bugs on odd input: no file name
        name = None
    if not name:
        return ""
    name = repair_surrogates(str(name))
    if "=?" in name:  # RFC 2047 inside a quoted parameter: not allowed, sent by many clients
        name = decode_words(name)
    return _safe_filename(name)


def _safe_filename(name: str) -> str:
    """A name for saving: no directories, no control characters, at most 255 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip()
    if name in {".", ".."}:
        return ""
    if len(name) > _MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        name = name[: _MAX_FILENAME - len(ext) - 1] + ("." + ext if ext else "")
    return name


def _content_id(part: Message) -> str | None:
    raw = _raw_header(part, "content-id")
    if raw is None:
        return None
    value = _CONTROL.sub("", repair_surrogates(unfold(raw))).strip()
    if value.startswith("<") and ">" in value:
        value = value[1 : value.index(">")]
    return value.strip() or None


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - an undecodable payload is kept raw (below)
        data = None
    if isinstance(data, bytes):
        return data
    try:
        raw = part.get_payload()
    except Exception:  # noqa: BLE001 - nothing readable: an empty part, not a failed message
        return b""
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def _serialize(msg: Message) -> bytes:
    """Bytes of an embedded message, regenerated (the parser keeps no raw offsets)."""
    buf = BytesIO()
    BytesGenerator(buf, mangle_from_=False, policy=_OUT_POLICY).flatten(msg)
    return buf.getvalue()


def _default_name(ctype: str, path: str, hint: str = "") -> str:
    ext = mimetypes.guess_extension(ctype, strict=False) or ".bin"
    if ctype in {"text/calendar", "application/ics"}:
        return "invite.ics"  # what Outlook and Gmail call it
    if ctype == "message/rfc822":
        ext = ".eml"
    elif ctype.startswith("message/") or ctype == "text/rfc822-headers":
        ext = ".txt"
    base = _UNSAFE_NAME.sub("_", _safe_filename(hint))[:80].strip() if hint else ""
    return f"{base or 'part-' + (path or '1')}{ext}"


# --- body text helpers ---------------------------------------------------------------------


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 §4.2: join format=flowed soft line breaks (keeping quote depth)."""
    out: list[str] = []
    carry: str | None = None
    carry_depth = -1
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        if body.startswith(" "):
            body = body[1:]  # space-stuffing (§4.4)
        flowed = body.endswith(" ") and body != "-- "
        if flowed and delsp:
            body = body[:-1]
        if carry is not None and depth == carry_depth:
            body = carry + body
        elif carry is not None:
            out.append((">" * carry_depth + " " if carry_depth else "") + carry)
        if flowed:
            carry, carry_depth = body, depth
        else:
            out.append((">" * depth + " " if depth else "") + body)
            carry, carry_depth = None, -1
    if carry is not None:
        out.append((">" * carry_depth + " " if carry_depth else "") + carry)
    return "\n".join(out)


def _cut_html(html: str, limit: int) -> str:
    """Cut sanitised HTML to at most `limit` characters and re-sanitise to close open tags."""
    cut = limit
    for _ in range(4):
        candidate = sanitize_html(html[:cut])
        if len(candidate) <= limit:
            return candidate
        cut -= len(candidate) - limit + 16
        if cut <= 0:
            break
    return ""


# --- the walk --------------------------------------------------------------------------------


def _walk(msg: Message, state: _State) -> None:
    stack: list[tuple[Message, str, int]] = [(msg, "", 0)]
    while stack:
        part, path, depth = stack.pop()
        state.parts_seen += 1
        if state.parts_seen > _MAX_PARTS:
            state.defect(path, "too-many-parts", f"more than {_MAX_PARTS} MIME parts; rest skipped")
            return
        try:
            _visit(part, path, depth, stack, state)
        except Exception as exc:  # noqa: BLE001 - one bad part never fails the message
            state.defect(path or "1", "undecodable-part", f"{type(exc).__name__}: {exc}")
            state.pending.append(
                _Pending(
                    filename=_default_name("application/octet-stream", path),
                    content_type="application/octet-stream",
                    data=_payload(part),
                    content_id=None,
                    disposition="attachment",
                    charset=None,
                    part=path or "1",
                )
            )
        # Read after the visit: decoding the payload adds base64 defects to the part.
        for d in getattr(part, "defects", ())[:10]:
            state.defect(path, "mime", f"{type(d).__name__}: {d}".rstrip(": "))


def _visit(
    part: Message, path: str, depth: int, stack: list[tuple[Message, str, int]], state: _State
) -> None:
    """Handle one part: push a multipart's children, or read a leaf."""
    ctype = _content_type(part)
    if ctype.startswith("message/"):
        _message_part(part, ctype, path or "1", state)
        return
    children = part.get_payload() if part.is_multipart() else None
    if isinstance(children, list):
        if depth >= _MAX_DEPTH:
            state.defect(path, "too-deep", f"MIME nesting deeper than {_MAX_DEPTH}")
            return
        for i in range(len(children), 0, -1):  # reversed: pop() keeps document order
            child = children[i - 1]
            if isinstance(child, Message):
                stack.append((child, f"{path}.{i}" if path else str(i), depth + 1))
        return
    _leaf(part, ctype, path or "1", state)


def _message_part(part: Message, ctype: str, path: str, state: _State) -> None:
    """message/rfc822 (forwarded mail, returned mail in a DSN), delivery-status and friends."""
    payload = part.get_payload()
    inner = payload if isinstance(payload, list) else []
    if ctype in {"message/delivery-status", "message/global-delivery-status"}:
        if inner:  # the stdlib parses each field group as a Message of headers
            text = "\r\n".join(
                "".join(f"{k}: {v}\r\n" for k, v in block.raw_items())
                for block in inner
                if isinstance(block, Message)
            )
        else:
            text = decode_text(_payload(part), "utf-8").text
        state.dsn_text = state.dsn_text or text
        data = text.encode("utf-8", "surrogateescape")
        name = _filename(part) or "delivery-status.txt"
    elif inner and isinstance(inner[0], Message):
        embedded = inner[0]
        if ctype in {"message/rfc822", "message/global"} and state.dsn_original_headers is None:
            state.dsn_original_headers = "".join(
                f"{k}: {v}\r\n" for k, v in embedded.raw_items()
            )
        try:
            data = _serialize(embedded)
        except Exception as exc:  # noqa: BLE001 - the embedded message is kept as its bytes
            state.defect(path, "undecodable-part", f"embedded message: {type(exc).__name__}")
            data = _payload(part)
        subject = header_text(_raw_header(embedded, "subject") or "")
        name = _filename(part) or _default_name("message/rfc822" if ctype in {
            "message/rfc822", "message/global"} else ctype, path, subject)
    else:
        data = _payload(part)
        name = _filename(part) or _default_name(ctype, path)
    state.pending.append(
        _Pending(name, ctype, data, _content_id(part), _disposition(part), None, path)
    )


def _leaf(part: Message, ctype: str, path: str, state: _State) -> None:
    if ctype.startswith("multipart/"):  # no usable boundary: read the body as text
        ctype = "text/plain"
    disposition = _disposition(part)
    filename = _filename(part)
    charset = _param(part, "charset")
    data = _payload(part)
    cid = _content_id(part)

    if ctype in {"text/plain", "text/html"} and disposition != "attachment" and not filename:
        decoded = decode_text(data, charset)
        if decoded.note is not None and looks_binary(data):
            state.defect(path, "undecodable-part", f"{ctype} part is not text ({decoded.note})")
            state.pending.append(
                _Pending(
                    _default_name("application/octet-stream", path),
                    "application/octet-stream",
                    data,
                    cid,
                    "attachment",
                    None,
                    path,
                )
            )
            return
        if decoded.note is not None:
            state.defect(path, "charset-fallback", decoded.note)
        text = _NEWLINES.sub("\n", decoded.text)
        if ctype == "text/html":
            state.html.append(text)
            return
        if (_param(part, "format") or "").lower() == "flowed":
            text = _unflow(text, (_param(part, "delsp") or "").lower() == "yes")
        state.plain.append(text)
        return

    if ctype == "text/rfc822-headers" and state.dsn_original_headers is None:
        state.dsn_original_headers = decode_text(data, charset).text

    if is_tnef(ctype, filename, data):
        if _unpack_tnef(data, path, cid, filename, state):
            return

    if not filename:
        filename = _default_name(ctype, path)
    if ctype in {"text/calendar", "application/ics"}:
        info = parse_calendar(data, path)
        if info is None:
            state.defect(path, "calendar", "text/calendar part is not valid iCalendar")
        else:
            state.calendars.append(info)
    state.pending.append(_Pending(filename, ctype, data, cid, disposition, charset, path))


def _unpack_tnef(data: bytes, path: str, cid: str | None, filename: str, state: _State) -> bool:
    """Replace a winmail.dat by its contents; False keeps it as an attachment as well."""
    content = unpack_tnef(data)
    if content.error is not None:
        state.defect(path, "tnef", f"winmail.dat could not be unpacked: {content.error}")
        return False
    if content.bad_checksum:
        state.defect(path, "tnef", "winmail.dat has attributes with a bad checksum")
    for i, f in enumerate(content.files, 1):
        state.pending.append(
            _Pending(
                _safe_filename(f.filename) or f"attachment-{i}",
                f.content_type,
                f.data,
                f.content_id,
                "inline" if f.content_id else "attachment",
                None,
                f"{path}.t{i}",
            )
        )
    if content.body and state.tnef_text is None:
        state.tnef_text = _NEWLINES.sub("\n", content.body)
    if content.html and state.tnef_html is None:
        state.tnef_html = _NEWLINES.sub("\n", content.html)
    if not (content.files or content.body or content.html or content.has_rtf_body):
        state.defect(path, "tnef", "winmail.dat holds no attachment or body; kept as is")
        return False
    if content.has_rtf_body and not (content.body or content.html):
        state.defect(path, "tnef", "body is compressed RTF only; winmail.dat kept")
        return False
    return True


# --- assembling the value ------------------------------------------------------------------


def _headers(msg: Message, limit: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    """(all headers, the ones kept within `limit`, truncated?)."""
    every: list[tuple[str, str]] = []
    for name, raw in msg.raw_items():
        value = repair_surrogates(unfold(str(raw)), "utf-8").replace("\t", " ")
        value = _CONTROL.sub("", value)
        every.append((name.strip(), value.strip()))
    kept: list[tuple[str, str]] = []
    used = 0
    for name, value in every:
        used += len(name) + len(value) + 4  # "name: value\r\n"
        if used > limit:
            return every, kept, True
        kept.append((name, value))
    return every, kept, False


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def _attachments(state: _State, html: str) -> tuple[Attachment, ...]:
    referenced = {unquote(m.group(1)) for m in _CID_REF.finditer(html)} if html else set()
    lowered = {r.lower() for r in referenced}
    out = []
    for p in state.pending:
        cited = p.content_id is not None and (
            p.content_id in referenced or p.content_id.lower() in lowered
        )
        out.append(
            Attachment(
                filename=p.filename,
                content_type=p.content_type,
                size=len(p.data),
                sha256=hashlib.sha256(p.data).hexdigest(),
                data=p.data,
                content_id=p.content_id,
                inline=p.disposition == "inline" or cited,
                charset=p.charset,
                part=p.part,
            )
        )
    return tuple(out)


_TAG_TEXT = re.compile(r"<[^<>]*>")  # never spans a "<": linear on "<<<<…"
_SPACES = re.compile(r"[ \t\r\f\v]+")


def _plain_from_html(html: str, limit: int) -> str:
    """Text of HTML by dropping tags: crude but linear, for the safe path (see parse_message)."""
    text = _unescape(_TAG_TEXT.sub(" ", html[: 4 * limit + 1]))
    text = _SPACES.sub(" ", text.replace("\xa0", " "))
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()


def _html_attachment(html: str) -> _Pending:
    data = html.encode("utf-8", "surrogateescape")
    return _Pending("body.html", "text/html", data, None, "attachment", "utf-8", "html")


def _parse(
    raw: bytes, max_text: int, max_headers: int, html_input: int, html_depth: int, safe: bool
) -> InboundEmail:
    state = _State()
    try:
        msg = BytesParser(policy=_POLICY).parsebytes(raw)
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: keep headers, body opaque
        state.defect("", "parse", f"MIME structure not parsed: {type(exc).__name__}")
        msg = BytesParser(policy=_POLICY).parsebytes(raw, headersonly=True)
    _walk(msg, state)

    every, kept, headers_truncated = _headers(msg, max_headers)
    senders = parse_addresses(_first(every, "from") or "")
    if len(senders) > 1:
        state.defect("", "header", "more than one From address; the first is used")
    sender = senders[0] if senders else Address("")
    if not senders:
        state.defect("", "header", "no usable From address")

    html_raw = "\n".join(state.html) if state.html else (state.tnef_html or "")
    html = ""
    html_truncated = False
    if html_raw and safe:
        # The safe path: no sanitiser, no HTML walk; the HTML is kept whole as an attachment.
        state.pending.append(_html_attachment(html_raw))
        state.defect("", "slow-path", "HTML not rendered (safe path); kept as body.html")
    elif html_raw:
        bounded = bound_html(html_raw, max_chars=html_input, max_depth=html_depth)
        if bounded.flattened:
            state.defect(
                "", "html-depth",
                f"{bounded.flattened} HTML tags nested deeper than {html_depth} dropped",
            )
        html = sanitize_html(bounded.html).strip()
        html_truncated = bounded.truncated
    text_from_html = False
    if state.plain and (any(p.strip() for p in state.plain) or not (html_raw if safe else html)):
        text = "\n".join(state.plain)
    elif state.tnef_text:
        text = state.tnef_text
    elif html_raw and safe:
        text, text_from_html = _plain_from_html(html_raw, max_text), True
    elif html:
        text, text_from_html = html_to_text(html), True
    else:
        text = ""
    text_truncated = len(text) > max_text
    if text_truncated:
        text = text[:max_text]
    if len(html) > max_text:
        html_truncated = True
        html = _cut_html(html, max_text)

    root_type = _content_type(msg)
    report_type = (_param(msg, "report-type") or "").lower() or None
    is_dsn = root_type == "multipart/report" and (
        report_type == "delivery-status" or state.dsn_text is not None
    )
    report: DeliveryReport | None = None
    if is_dsn:
        report = parse_delivery_status(state.dsn_text or "", state.dsn_original_headers)
    auto = auto_signals(every, sender.address, root_type, report_type)

    return InboundEmail(
        message_id=msg_id(_first(every, "message-id")),
        in_reply_to=msg_id(_first(every, "in-reply-to")),
        references=msg_id_list(_first(every, "references")),
        subject=header_text(_first(every, "subject") or ""),
        from_address=sender.address,
        from_name=sender.name,
        reply_to=parse_addresses(_first(every, "reply-to") or ""),
        to=_all_addresses(every, "to"),
        cc=_all_addresses(every, "cc"),
        bcc=_all_addresses(every, "bcc"),
        date=parse_date(_first(every, "date")),
        text_body=text,
        html_body=html,
        text_from_html=text_from_html,
        text_truncated=text_truncated,
        html_truncated=html_truncated,
        headers=tuple(kept),
        headers_truncated=headers_truncated,
        attachments=_attachments(state, html_raw),
        calendars=tuple(state.calendars),
        auto_submitted=auto,
        is_dsn=is_dsn,
        delivery_report=report,
        defects=tuple(state.defects),
    )


def _all_addresses(headers: list[tuple[str, str]], name: str) -> tuple[Address, ...]:
    """Addresses of every `name` header (some mailers send To twice)."""
    found: list[Address] = []
    for key, value in headers:
        if key.lower() == name:
            found.extend(parse_addresses(value))
    return tuple(found)


def _fallback(raw: bytes, exc: BaseException) -> InboundEmail:
    """The value when parsing itself failed: the whole message kept as one attachment."""
    try:
        mid = scan_message_id(raw)
    except Exception:  # noqa: BLE001 - the fallback itself must not fail
        mid = None
    return InboundEmail(
        message_id=msg_id(mid),
        in_reply_to=None,
        references=(),
        subject="",
        from_address="",
        from_name="",
        reply_to=(),
        to=(),
        cc=(),
        date=None,
        text_body="",
        html_body="",
        text_from_html=False,
        text_truncated=False,
        html_truncated=False,
        headers=(),
        headers_truncated=False,
        attachments=(
            Attachment(
                filename="message.eml",
                content_type="message/rfc822",
                size=len(raw),
                sha256=hashlib.sha256(raw).hexdigest(),
                data=raw,
                part="1",
            ),
        ),
        calendars=(),
        auto_submitted=AutoSubmission(),
        is_dsn=False,
        delivery_report=None,
        defects=(Defect("", "internal", f"message not parsed: {type(exc).__name__}: {exc}"[:300]),),
    )


def parse_message(
    raw: bytes | bytearray | memoryview,
    *,
    max_text: int = MAX_TEXT,
    max_headers: int = MAX_HEADERS,
    max_html_input: int = MAX_HTML_INPUT,
    max_html_depth: int = MAX_HTML_DEPTH,
    safe: bool = False,
) -> InboundEmail:
    """Parse an accepted message (CRLF or LF line endings); never raises on any input.

    HTML is cut to `max_html_input` characters and `max_html_depth` nesting before it is
    sanitised (`htmlbound`). `safe=True` is the slow path for a message whose parse ran out of
    time: linear work only; the HTML is not sanitised but kept as a `body.html` attachment,
    the text taken from the plain part or from the HTML with its tags dropped.
    """
    data = bytes(raw)
    try:
        return _parse(
            data, max(0, max_text), max(0, max_headers), max(0, max_html_input),
            max(1, max_html_depth), safe,
        )
    except Exception as exc:  # noqa: BLE001 - a message that cannot be parsed is kept whole
        return _fallback(data, exc)
