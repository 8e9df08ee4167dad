"""parse_message never raises, whatever it is fed, and its invariants hold.

Three sources: random bytes, the corpus mutated (bytes flipped, cut, MIME tokens inserted), and
messages assembled from a vocabulary of hostile header and part fragments.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcase.mime import InboundEmail, parse_message

from .helpers import all_fixtures, raw

CORPUS = [raw(name) for name in all_fixtures()]
SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TOKENS = [
    b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"--", b"=?", b"?=", b"=?utf-8?B?", b"=?x?Q?=FF?=",
    b'boundary="', b"Content-Type: multipart/mixed; boundary=x\r\n", b"--x\r\n", b"--x--",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n", b"begin 644 a\r\n", b"charset=", b"*0*=",
    b"filename*=utf-8''%", b"\x00", b"\xff\xfe", b"\x1b$B", b"(((((", b'"""""', b"<<<<",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: application/ms-tnef\r\n",
    b"x\x9f>\"", b"BEGIN:VCALENDAR\r\n", b"Content-Type: text/calendar\r\n",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n",
    b"Content-Type: message/delivery-status\r\n", b"Final-Recipient: ;\r\n",
    b"<script>", b"<img src=http://x onerror=alert(1)>", b"\t", b" ", b":",
]

HEADER_VALUES = [
    "", " ", "=?utf-8?B?w6TDtsO8?=", "=?iso-2022-jp?B?GyRCJCIbKEI=?=", "=?bogus?Q?=E9?=",
    "=?utf-8?Q?unterminated", '"unterminated', "(((", ")))", "<<a@b>>", "a@b, , ,c@d",
    "group: a@b, c@d;", "@@@", "\\\\\\", "a" * 3000, "x@y (comment (nested))",
    "=?utf-8?B?!!!?=", "Mon, 32 Foo 20x4", "<id@x> <id2@x", "Zoë <z@x>",
]
HEADER_NAMES = ["From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To",
                "References", "Content-Type", "Content-Disposition", "Content-ID",
                "Content-Transfer-Encoding", "Auto-Submitted", "Precedence", "List-Id"]


class _Markup(HTMLParser):
    """The elements and attributes of sanitised HTML, as a browser's parser would see them
    (attribute values unescaped). Text is not looked at: a mutated message can turn a tag into
    text, and `onerror=` or `javascript:` in text is only text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((name, value or "") for name, value in attrs)

    handle_startendtag = handle_starttag


def _assert_inert(html: str) -> None:
    markup = _Markup()
    markup.feed(html)
    markup.close()
    assert not {"script", "iframe", "object", "embed", "base", "meta"} & set(markup.tags)
    for name, value in markup.attrs:
        assert not name.startswith("on"), (name, value)
        # Browsers ignore whitespace and control characters inside a URL scheme.
        scheme = re.sub(r"[\x00-\x20]", "", value).lower()
        assert not scheme.startswith(("javascript:", "vbscript:")), (name, value)


def test_the_markup_check_looks_at_attributes_not_text() -> None:
    _assert_inert("<p>img src=x onerror=&quot;alert(1)&quot; javascript:alert(1)</p>")
    for bad in ['<img src="x" onerror="alert(1)">', '<a href=" java\tscript:alert(1)">x</a>',
                "<script>alert(1)</script>", '<a href="JavaScript&colon;alert(1)">x</a>']:
        try:
            _assert_inert(bad)
        except AssertionError:
            continue
        raise AssertionError(f"not caught: {bad}")


def check(email: InboundEmail, max_text: int = 131_072) -> None:
    assert isinstance(email, InboundEmail)
    assert len(email.text_body) <= max_text and len(email.html_body) <= max_text
    assert sum(len(n) + len(v) + 4 for n, v in email.headers) <= 32_000
    for a in email.attachments:
        assert a.size == len(a.data) and a.sha256 == hashlib.sha256(a.data).hexdigest()
        assert "/" not in a.filename and "\\" not in a.filename
    _assert_inert(email.html_body)
    # the last-resort fallback is for bugs: fuzzing must not reach it
    assert not any(d.kind == "internal" for d in email.defects), email.defects


@SETTINGS
@given(st.binary(max_size=4000))
def test_random_bytes(data: bytes) -> None:
    check(parse_message(data))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            end = draw(st.integers(pos, min(len(data), pos + 200)))
            del data[pos:end]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_corpus(data: bytes) -> None:
    check(parse_message(data))


@st.composite
def assembled(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(HEADER_NAMES))
        value = draw(st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=60)))
        lines.append(f"{name}: {value}")
    head = "\r\n".join(lines).encode("utf-8", "surrogatepass")
    body = draw(st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=40)), max_size=30))
    return head + b"\r\n\r\n" + b"".join(body)


@SETTINGS
@given(assembled(), st.integers(0, 300))
def test_assembled_messages(data: bytes, max_text: int) -> None:
    check(parse_message(data, max_text=max_text), max_text)


def test_non_bytes_like_and_empty() -> None:
    check(parse_message(b""))
    check(parse_message(bytearray(b"Subject: x\r\n\r\nbody")))
    check(parse_message(memoryview(b"Subject: x\r\n\r\nbody")))
    check(parse_message(b"\r\n\r\n\r\n"))
    check(parse_message(b"no colon header line\r\n\r\nbody"))
