"""compose(): CRLF, required headers, RFC 2047, multipart, and no header injection from any field."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailcase.mime import Attachment, AutoReason, parse_message
from mailcase.outbound.compose import OutgoingEmail, compose, new_message_id

INJECT = "x\r\nBcc: victim@evil.test\r\n\r\nbody"


def _headers(raw: bytes) -> list[tuple[str, str]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [(k.lower(), str(v)) for k, v in msg.items()]


def _names(raw: bytes) -> list[str]:
    return [k for k, _ in _headers(raw)]


def _basic(**kw: object) -> OutgoingEmail:
    fields: dict[str, object] = {
        "from_addr": "support@example.test",
        "to": ("customer@client.test",),
        "subject": "Hello",
        "text": "Body",
    }
    fields.update(kw)
    return OutgoingEmail(**fields)  # type: ignore[arg-type]


def test_crlf_only_and_required_headers() -> None:
    raw = compose(_basic(text="one\ntwo\rthree\r\nfour"))
    assert b"\r\n" in raw
    assert re.search(rb"(?<!\r)\n", raw) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", raw) is None, "bare CR"
    names = _names(raw)
    for required in ("from", "to", "subject", "date", "message-id", "mime-version"):
        assert names.count(required) == 1, required
    parsed = parse_message(raw)
    assert parsed.text_body.splitlines() == ["one", "two", "three", "four"]
    assert parsed.date is not None


def test_new_message_id_shape_and_randomness() -> None:
    a, b = new_message_id("example.test"), new_message_id("example.test")
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.test>", a)
    assert a != b
    assert new_message_id("evil>\r\nBcc: x").count(">") == 1
    assert "\r" not in new_message_id("a\r\nb") and " " not in new_message_id("a b")


def test_given_message_id_is_used_and_generated_one_on_from_domain() -> None:
    raw = compose(_basic(message_id="<ack-1@example.test>"))
    assert parse_message(raw).message_id == "<ack-1@example.test>"
    raw2 = compose(_basic())
    mid = parse_message(raw2).message_id
    assert mid is not None and mid.endswith("@example.test>")


@pytest.mark.parametrize("field", ["subject", "from_name", "text_header", "auto_submitted"])
def test_no_header_injection_from_text_fields(field: str) -> None:
    kw: dict[str, object] = {}
    if field == "text_header":
        kw["extra_headers"] = (("X-Case", INJECT),)
    else:
        kw[field] = INJECT
    raw = compose(_basic(**kw))
    assert "bcc" not in _names(raw)
    parsed = parse_message(raw)
    assert parsed.bcc == ()
    assert [a.address for a in parsed.to] == ["customer@client.test"]
    # The body is still the body: the injected blank line did not end the header block.
    assert parsed.text_body.strip() == "Body"


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\u2028", "\x85", "\x0b", "\x0c"])
def test_every_line_break_in_subject_becomes_a_space(char: str) -> None:
    raw = compose(_basic(subject=f"a{char}Bcc: v@evil.test"))
    assert "bcc" not in _names(raw)
    assert parse_message(raw).subject == "a Bcc: v@evil.test"


@pytest.mark.parametrize(
    "addr",
    [
        "a@b.test, victim@evil.test",
        "a@b.test>\r\nBcc: victim@evil.test",
        "Name <a@b.test>",
        "no-at-sign",
        "",
        "a@",
        '"a\r\nb"@x.test',
    ],
)
def test_bad_addresses_are_refused(addr: str) -> None:
    with pytest.raises(ValueError):
        compose(_basic(to=(addr,)))
    with pytest.raises(ValueError):
        compose(_basic(from_addr=addr))


def test_needs_a_recipient() -> None:
    with pytest.raises(ValueError):
        compose(_basic(to=()))
    raw = compose(_basic(to=(), cc=("c@d.test",)))
    assert [a.address for a in parse_message(raw).cc] == ["c@d.test"]


def test_extra_header_may_not_replace_ours() -> None:
    for name in ("To", "bcc", "Message-ID", "Auto-Submitted", "Bad Name", "X:Y"):
        with pytest.raises(ValueError):
            compose(_basic(extra_headers=((name, "v"),)))


def test_rfc2047_for_non_ascii_subject_and_name() -> None:
    raw = compose(
        _basic(from_name="Jürgen Müller, Support", subject="Ihre Anfrage – Fall 00001027 ✓")
    )
    assert raw.isascii()
    assert b"=?utf-8?" in raw
    parsed = parse_message(raw)
    assert parsed.subject == "Ihre Anfrage – Fall 00001027 ✓"
    assert parsed.from_name == "Jürgen Müller, Support"
    assert parsed.from_address == "support@example.test"


def test_long_subject_folds_and_round_trips() -> None:
    subject = "Word " * 60 + "Ünicode " * 20
    raw = compose(_basic(subject=subject.strip()))
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 78
    assert parse_message(raw).subject == subject.strip()


def test_non_ascii_body_is_not_8bit() -> None:
    raw = compose(_basic(text="Grüße\n" + "x" * 2000))
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert parse_message(raw).text_body.startswith("Grüße\n" + "x" * 100)


def test_html_makes_multipart_alternative() -> None:
    raw = compose(_basic(text="plain", html="<p>rich &amp; <b>bold</b></p>"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in msg.iter_parts()]  # type: ignore[attr-defined]
    assert types == ["text/plain", "text/html"]
    parsed = parse_message(raw)
    assert parsed.text_body.strip() == "plain"
    assert "<b>bold</b>" in parsed.html_body


def test_attachments_round_trip() -> None:
    data = bytes(range(256)) * 10
    att = Attachment(
        filename="Rechnung März.pdf",
        content_type="application/pdf",
        size=len(data),
        sha256="",
        data=data,
    )
    txt = Attachment(
        filename="a\r\nContent-Type: evil.txt",
        content_type="text/plain\r\nX: y",
        size=2,
        sha256="",
        data=b"hi",
    )
    raw = compose(_basic(html="<p>x</p>", attachments=(att, txt)))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed"
    parsed = parse_message(raw)
    by_name = {a.filename: a for a in parsed.attachments}
    assert by_name["Rechnung März.pdf"].data == data
    assert by_name["Rechnung März.pdf"].content_type == "application/pdf"
    (evil,) = [a for a in parsed.attachments if a.data == b"hi"]
    assert "\n" not in evil.filename
    assert evil.content_type == "application/octet-stream"
    assert "x" not in _names(raw)


def test_auto_submitted_and_threading_headers() -> None:
    raw = compose(
        _basic(
            auto_submitted="auto-replied",
            in_reply_to="<in-1@client.test>",
            references=("<root@client.test>", "not an id", "<a<b@c>"),
        )
    )
    parsed = parse_message(raw)
    assert AutoReason.AUTO_SUBMITTED in parsed.auto_submitted.reasons
    assert parsed.header("Auto-Submitted") == "auto-replied"
    assert parsed.in_reply_to == "<in-1@client.test>"
    assert parsed.references == ("<root@client.test>", "<in-1@client.test>")
    assert "auto-submitted" not in _names(compose(_basic()))


def test_hostile_in_reply_to_is_dropped_not_copied() -> None:
    raw = compose(_basic(in_reply_to="<a@b>\r\nBcc: victim@evil.test"))
    assert "bcc" not in _names(raw)
    assert "in-reply-to" not in _names(raw)
    with pytest.raises(ValueError):
        compose(_basic(message_id="<x@y>\r\nBcc: v@evil.test"))


def test_long_references_fold_between_ids_never_encoded() -> None:
    refs = tuple(f"<{'r' * 60}.{i}@client.test>" for i in range(30))
    raw = compose(_basic(references=refs))
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?" not in header_block
    assert max(len(line) for line in header_block.split(b"\r\n")) <= 998
    parsed = parse_message(raw)
    assert parsed.references == refs[-20:]


def test_internationalised_address_uses_smtputf8() -> None:
    raw = compose(_basic(to=("jürgen@müller.test",), subject="Grüße"))
    parsed = parse_message(raw)
    assert [a.address for a in parsed.to] == ["jürgen@müller.test"]
    assert parsed.subject == "Grüße"


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120
) | st.sampled_from(
    ["\r\nBcc: v@evil.test", "\n\nbody", "x\rTo: v@evil.test", "=?utf-8?q?=0D=0A?="]
)


@given(subject=_TEXT, name=_TEXT, header=_TEXT, text=_TEXT)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_field_content_adds_a_header_or_recipient(
    subject: str, name: str, header: str, text: str
) -> None:
    raw = compose(
        _basic(subject=subject, from_name=name, text=text, extra_headers=(("X-Note", header),))
    )
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None
    names = _names(raw)
    assert sorted(names) == sorted(
        [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "x-note",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
        ]
    )
    parsed = parse_message(raw)
    assert [a.address for a in parsed.to] == ["customer@client.test"]
    assert parsed.from_address == "support@example.test"
    assert parsed.cc == () and parsed.bcc == ()


EW_INJECT = "=?utf-8?q?x=0D=0ABcc:_victim@evil.test?="


@pytest.mark.parametrize("field", ["subject", "from_name", "text_header", "filename"])
def test_encoded_words_in_input_stay_literal(field: str) -> None:
    # The stdlib decodes encoded words in values it is given: that must not become a CRLF.
    kw: dict[str, object] = {}
    if field == "text_header":
        kw["extra_headers"] = (("X-Case", EW_INJECT),)
    elif field == "filename":
        kw["attachments"] = (
            Attachment(filename=EW_INJECT, content_type="text/plain", size=1, sha256="", data=b"x"),
        )
    else:
        kw[field] = EW_INJECT
    raw = compose(_basic(**kw))
    assert "bcc" not in _names(raw)
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", raw) is None
    parsed = parse_message(raw)
    assert parsed.bcc == ()
    if field == "subject":
        assert parsed.subject == EW_INJECT
    if field == "from_name":
        assert parsed.from_name == EW_INJECT


def test_display_names_are_quoted() -> None:
    raw = compose(_basic(from_name='A "quoted" \\ name, Jr. <x@evil.test>'))
    parsed = parse_message(raw)
    assert parsed.from_name == 'A "quoted" \\ name, Jr. <x@evil.test>'
    assert parsed.from_address == "support@example.test"
