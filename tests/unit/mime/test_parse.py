"""parse_message rules that the corpus does not pin down: limits, charsets, parts, signals."""

from __future__ import annotations

import base64

import pytest

from mailcase.mime import MAX_HEADERS, MAX_TEXT, AutoReason, parse_message
from mailcase.mime.charset import decode_text, resolve_charset
from mailcase.mime.fields import decode_words, msg_id_list, parse_addresses, parse_date
from mailcase.mime.html import html_to_text, sanitize_html

from .tnefbuild import TnefAttachment, build_tnef


def msg(headers: str, body: bytes | str = b"hello\r\n") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


BASE = "From: a@example.org\nTo: support@example.test\nSubject: s\nMessage-ID: <m@x>\n"


# --- limits (Salesforce: text 131 072 characters, headers 32 000) -------------------------


def test_limits_are_salesforce_figures() -> None:
    assert (MAX_TEXT, MAX_HEADERS) == (131_072, 32_000)


def test_text_cut_at_max_text_with_flag() -> None:
    body = ("ä" * 100 + "\r\n") * 2000  # 202 000 characters, 2 bytes each
    e = parse_message(msg(BASE + "Content-Type: text/plain; charset=utf-8\n", body))
    assert e.text_truncated and len(e.text_body) == MAX_TEXT
    assert e.text_body == body.replace("\r\n", "\n")[:MAX_TEXT]
    small = parse_message(msg(BASE, "x" * 100), max_text=50)
    assert small.text_truncated and small.text_body == "x" * 50
    exact = parse_message(msg(BASE, "x" * 50), max_text=50)
    assert not exact.text_truncated and exact.text_body == "x" * 50


def test_html_cut_and_still_sanitised() -> None:
    html = "<p>" + "<b>bold</b> <i>text</i> " * 10000 + "</p>"
    e = parse_message(msg(BASE + "Content-Type: text/html\n", html), max_text=1000)
    assert e.html_truncated and len(e.html_body) <= 1000
    assert e.html_body.endswith("</p>")  # open tags were closed again
    assert e.text_truncated and len(e.text_body) == 1000  # text from the (full) HTML, then cut
    assert e.text_from_html


def test_headers_capped_at_max_headers() -> None:
    many = "".join(f"X-Filler-{i}: {'v' * 90}\n" for i in range(400))  # ~42 000 characters
    e = parse_message(msg(BASE + many))
    assert e.headers_truncated
    used = sum(len(n) + len(v) + 4 for n, v in e.headers)
    assert used <= MAX_HEADERS
    assert used + len("X-Filler-000: ") + 90 + 4 > MAX_HEADERS  # cut at the first that overflows
    assert e.headers[:4] == (("From", "a@example.org"), ("To", "support@example.test"),
                             ("Subject", "s"), ("Message-ID", "<m@x>"))
    # typed fields still come from all headers, even those past the cap
    late = parse_message(msg(many + "Subject: late\n"))
    assert late.headers_truncated and late.subject == "late" and late.header("subject") is None
    assert not parse_message(msg(BASE)).headers_truncated


# --- charsets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("iso-8859-1", "Grüße – €", "cp1252"),  # WHATWG: latin-1 label means windows-1252
        ("gb2312", "你好，世界", "gb18030"),
        ("shift_jis", "①番の会議室", "cp932"),
        ("ks_c_5601-1987", "안녕하세요", "cp949"),
        ("koi8-r", "Привет", "koi8_r"),
        ("UTF-8", "naïve", "utf-8"),
        ('"utf-8"', "naïve", "utf-8"),
    ],
)
def test_declared_charsets_and_supersets(label: str, text: str, codec: str) -> None:
    decoded = decode_text(text.encode(codec), label)
    assert decoded.text == text and decoded.note is None


def test_mislabelled_and_unknown_charsets_fall_back() -> None:
    cp = "Grüße aus Köln – 12 €".encode("cp1252")
    assert decode_text(cp, "utf-8").text == "Grüße aus Köln – 12 €"
    assert "not valid utf-8" in (decode_text(cp, "utf-8").note or "")
    assert decode_text(cp, "x-unknown-thing").text == "Grüße aus Köln – 12 €"
    assert decode_text(cp, None).text == "Grüße aus Köln – 12 €"
    assert decode_text("Grüße".encode(), None).note is None  # undeclared UTF-8 is fine
    assert decode_text("Grüße".encode(), "us-ascii").text == "Grüße"
    ru = "Здравствуйте, заказ не пришёл, прошу проверить доставку.".encode("cp1251")
    assert decode_text(ru, "utf-8").text.startswith("Здравствуйте")


def test_transform_codecs_are_not_charsets() -> None:
    for label in ("unicode_escape", "raw-unicode-escape", "rot13", "base64", "zlib", "idna"):
        assert resolve_charset(label) is None
    assert decode_text(b"\\x41", "unicode_escape").text == "\\x41"


def test_bom_and_utf16_when_declared() -> None:
    assert decode_text(b"\xef\xbb\xbfhi", "iso-8859-1").text == "hi"
    assert decode_text("hällo".encode("utf-16"), "utf-16").text == "hällo"


# --- header fields --------------------------------------------------------------------------


def test_rfc2047_words() -> None:
    assert decode_words("=?utf-8?Q?J=C3=B6rg?= =?utf-8?Q?_M=C3=BCller?=") == "Jörg Müller"
    # a multi-byte character split across two encoded words
    assert decode_words("=?utf-8?B?w6Q=?= =?utf-8?B?w7Y=?=") == "äö"
    unpadded = base64.b64encode("日本語!".encode()).decode().rstrip("=")
    assert decode_words(f"=?UTF-8?B?{unpadded}?=") == "日本語!"  # padding missing
    assert decode_words("Re: =?iso-8859-1?q?caf=E9?= ok") == "Re: café ok"
    assert decode_words("=?utf-8*de?Q?Gr=C3=BC=C3=9Fe?=") == "Grüße"  # RFC 2231 language
    assert decode_words("=?bogus?Q?caf=E9?=") == "café"  # unknown charset: fallback
    assert decode_words("no words here =?") == "no words here =?"


def test_addresses() -> None:
    got = parse_addresses(
        '"Müller, Hans" <hans@example.com>, =?utf-8?Q?J=C3=B6rg?= <j@example.com>,\r\n'
        ' team: a@example.com, b@example.com;, bare@example.com, "=?utf-8?Q?Q=C3=BC?=" <q@x.y>,'
        " old@example.com (Old Style)"
    )
    assert [(a.name, a.address) for a in got] == [
        ("Müller, Hans", "hans@example.com"),
        ("Jörg", "j@example.com"),
        ("", "a@example.com"),
        ("", "b@example.com"),
        ("", "bare@example.com"),
        ("Qü", "q@x.y"),
        ("Old Style", "old@example.com"),
    ]
    # raw UTF-8 (RFC 6532) and raw windows-1252 (broken) display names
    utf8 = "Zoë <zoe@example.com>".encode().decode("ascii", "surrogateescape")
    assert parse_addresses(utf8)[0].name == "Zoë"
    cp = "Zoë <zoe@example.com>".encode("cp1252").decode("ascii", "surrogateescape")
    assert parse_addresses(cp)[0].name == "Zoë"
    assert parse_addresses("undisclosed-recipients:;") == ()
    assert parse_addresses("") == ()


def test_address_parsing_stays_fast_on_hostile_input() -> None:
    import time

    start = time.perf_counter()
    for hostile in ("(" * 5000, '"' * 5000, "<" * 5000, "=?utf-8?q?a?= " * 2000,
                    ", ".join(f'"U {i}" <u{i}@example.com>' for i in range(2000))):
        parse_addresses(hostile)
    assert time.perf_counter() - start < 2.0


def test_message_ids() -> None:
    assert msg_id_list("<a@x> <b@x>\r\n <c@x>") == ("<a@x>", "<b@x>", "<c@x>")
    assert msg_id_list("a@x") == ("<a@x>",)  # brackets missing (seen in the wild)
    many = " ".join(f"<{i}@x>" for i in range(300))
    kept = msg_id_list(many)
    assert len(kept) == 100 and kept[0] == "<0@x>" and kept[-1] == "<299@x>"
    e = parse_message(msg("In-Reply-To: <p@x> (from Bob)\nReferences: <r@x>\n <p@x>\n"))
    assert e.in_reply_to == "<p@x>" and e.references == ("<r@x>", "<p@x>")


def test_dates() -> None:
    assert parse_date("Tue, 11 Jun 2024 07:41:19 -0000").tzinfo is not None
    assert parse_date("garbage") is None
    assert parse_date("Tue, 11 Jun 99999 07:41:19 +0000") is None


# --- parts ----------------------------------------------------------------------------------


def _mixed(*parts: str) -> bytes:
    body = "".join(f"--b\r\n{p.replace(chr(10), chr(13) + chr(10))}\r\n" for p in parts)
    return msg(BASE + 'Content-Type: multipart/mixed; boundary="b"\n', body + "--b--\r\n")


def test_attachment_names_fallbacks_and_safety() -> None:
    e = parse_message(
        _mixed(
            "Content-Type: text/plain\n\nbody",
            'Content-Type: application/pdf; name="from-name.pdf"\n\nx',
            "Content-Type: application/pdf\nContent-Disposition: attachment; filename=\"=?utf-8?Q?=C3=A4.pdf?=\"\n\nx",
            "Content-Type: application/pdf\nContent-Disposition: attachment; filename*=iso-8859-1''%E4%F6.pdf\n\nx",
            'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="..\\\\..\\\\evil.exe"\n\nx',
            'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="/etc/passwd"\n\nx',
            "Content-Type: image/png\nContent-ID: <i1@x>\n\nx",
            "Content-Type: text/plain; name=notes.txt\n\nattached text",
        )
    )
    assert e.text_body == "body"
    assert [a.filename for a in e.attachments] == [
        "from-name.pdf", "ä.pdf", "äö.pdf", "evil.exe", "passwd", "part-7.png", "notes.txt"
    ]
    img = e.attachments[5]
    assert img.content_id == "i1@x" and not img.inline  # not referenced, not inline
    notes = e.attachments[6]
    assert notes.content_type == "text/plain" and notes.data == b"attached text"


def test_apple_style_split_text_parts_are_joined() -> None:
    e = parse_message(
        _mixed(
            "Content-Type: text/plain\n\nbefore the image",
            "Content-Type: image/png\nContent-Disposition: inline; filename=a.png\n\nx",
            "Content-Type: text/plain\n\nafter the image",
        )
    )
    assert e.text_body == "before the image\nafter the image"
    assert e.attachments[0].inline


def test_tnef_body_only_and_broken_tnef() -> None:
    tnef = build_tnef(
        subject="s", body=None, html="<p>Inhalt aus <b>TNEF</b></p>",
        attachments=[TnefAttachment("LOGO.PNG", "logo.png", "image/png", b"\x89PNG", "logo@x")],
    )
    b64 = base64.encodebytes(tnef).decode()
    e = parse_message(_mixed(f"Content-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n{b64}"))
    assert e.html_body == "<p>Inhalt aus <b>TNEF</b></p>"
    assert e.text_body == "Inhalt aus TNEF" and e.text_from_html
    (logo,) = e.attachments
    assert (logo.filename, logo.content_id, logo.part) == ("logo.png", "logo@x", "1.t1")
    # damaged container: kept as is, with a defect
    bad = base64.encodebytes(tnef[:40] + b"\xff" * 10).decode()
    e = parse_message(_mixed(f"Content-Type: application/ms-tnef; name=winmail.dat\nContent-Transfer-Encoding: base64\n\n{bad}"))
    assert [a.filename for a in e.attachments] == ["winmail.dat"]
    assert any(d.kind == "tnef" for d in e.defects)


def test_invalid_calendar_kept_with_defect() -> None:
    e = parse_message(_mixed("Content-Type: text/calendar; method=REQUEST\n\nnot a calendar"))
    assert e.calendars == () and e.attachments[0].filename == "invite.ics"
    assert [d.kind for d in e.defects] == ["calendar"]


def test_uuencode_and_missing_boundary() -> None:
    e = parse_message(msg(BASE + "Content-Type: multipart/mixed\n", "just text, no boundary\r\n"))
    assert e.text_body == "just text, no boundary\n"
    assert any("NoBoundaryInMultipart" in d.detail for d in e.defects)


def test_deep_nesting_is_bounded() -> None:
    depth = 200
    head = "".join(f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n' for i in range(depth))
    tail = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth + 1)))
    body = head + f"--b{depth}\r\nContent-Type: text/plain\r\n\r\ndeep" + tail
    e = parse_message(msg(BASE + 'Content-Type: multipart/mixed; boundary="b0"\n', body))
    assert e.from_address == "a@example.org"
    assert any(d.kind in {"too-deep", "parse"} for d in e.defects)


# --- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-generated\n", AutoReason.AUTO_SUBMITTED),
        ("Auto-Submitted: auto-replied; owner-email=x@y\n", AutoReason.AUTO_SUBMITTED),
        ("Precedence: bulk\n", AutoReason.PRECEDENCE),
        ("Precedence: JUNK\n", AutoReason.PRECEDENCE),
        ("Precedence: list\n", AutoReason.PRECEDENCE),
        ("List-Id: Users <users.lists.example.org>\n", AutoReason.LIST_ID),
        ("X-Auto-Response-Suppress: OOF, AutoReply\n", AutoReason.AUTO_RESPONSE_SUPPRESS),
        ("X-Autoreply: yes\n", AutoReason.AUTOREPLY_HEADER),
        ("Content-Type: multipart/report; report-type=disposition-notification; boundary=z\n",
         AutoReason.REPORT),
    ],
)
def test_auto_submitted_signals(headers: str, reason: AutoReason) -> None:
    e = parse_message(msg("From: a@example.org\n" + headers))
    assert e.auto_submitted.reasons == {reason}


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("MAILER-DAEMON@example.org", AutoReason.DAEMON_SENDER),
        ("postmaster@example.org", AutoReason.DAEMON_SENDER),
        ("no-reply@example.org", AutoReason.NOREPLY_SENDER),
        ("noreply@example.org", AutoReason.NOREPLY_SENDER),
        ("do_not_reply@example.org", AutoReason.NOREPLY_SENDER),
    ],
)
def test_machine_senders(sender: str, reason: AutoReason) -> None:
    assert parse_message(msg(f"From: {sender}\n")).auto_submitted.reasons == {reason}


def test_people_are_not_automatic() -> None:
    for headers in ("Auto-Submitted: no\n", "Precedence: first-class\n", "X-Auto-Response-Suppress: None\n", ""):
        e = parse_message(msg("From: Nora Reply <nora@example.org>\n" + headers))
        assert not e.auto_submitted and e.auto_submitted.signals == ()


# --- HTML -----------------------------------------------------------------------------------


def test_remote_images_opt_in_and_data_images() -> None:
    html = '<img src="https://x.example/a.png"><img src="data:image/png;base64,AAAA"><img src="data:text/html,x">'
    assert sanitize_html(html) == '<img><img src="data:image/png;base64,AAAA"><img>'
    assert 'src="https://x.example/a.png"' in sanitize_html(html, allow_remote_images=True)


def test_html_to_text() -> None:
    text = html_to_text(
        "<h1>Title</h1><p>One&nbsp;two<br>three</p><ul><li>a</li><li>b</li></ul>"
        '<p>See <a href="https://x.example/p">the page</a></p><pre>keep\nthis</pre>'
    )
    assert text == "Title\n\nOne two\nthree\n\n- a\n- b\n\nSee the page <https://x.example/p>\n\nkeep\nthis"


def test_hostile_mime_headers_stay_fast() -> None:
    """The stdlib header parser is superlinear; such values must bypass it (see parse.py)."""
    import time

    start = time.perf_counter()
    for value in ("(" * 20000, '"' * 20000, "=?a?q?b?= " * 3000, "x; " + "a=b; " * 5000):
        for header in ("Content-Type", "Content-Disposition", "Content-Transfer-Encoding"):
            e = parse_message(msg(f"From: a@example.org\n{header}: {value}\n"))
            assert e.from_address == "a@example.org"
    assert time.perf_counter() - start < 3.0


def test_empty_plain_alternative_uses_the_html_and_tabs_survive_unfolding() -> None:
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\n \r\n"
        "--b\r\nContent-Type: text/html\r\n\r\n<p>real content</p>\r\n--b--\r\n"
    )
    e = parse_message(
        msg(BASE + 'X-Folded: a\n\tb\nContent-Type: multipart/alternative; boundary="b"\n', body)
    )
    assert e.text_body == "real content" and e.text_from_html
    assert e.header("x-folded") == "a b"
