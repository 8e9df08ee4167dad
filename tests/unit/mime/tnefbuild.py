"""A minimal TNEF (winmail.dat) writer, so the corpus has a real one without Outlook.

It follows MS-OXTNEF: a signature and key, then attributes (level, id, type, length, data,
checksum = sum of data bytes mod 65536). Message level: version, OEM codepage, message class,
subject, MAPI properties (body, HTML body, internet codepage); per attachment the rendering data
opens it, then the 8.3 title, modify date, the data and the attachment's MAPI properties (long
file name, MIME tag, Content-ID). `tests/fixtures/eml/outlook-tnef-winmail.eml` carries the
output of `build_winmail()` and a test checks that it still is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE = 0x223E9F78
LVL_MESSAGE = 0x01
LVL_ATTACHMENT = 0x02

# (id, atp type) as in MS-OXTNEF §2.1.3.3
ATT_TNEF_VERSION = (0x9006, 0x0008)
ATT_OEM_CODEPAGE = (0x9007, 0x0006)
ATT_MESSAGE_CLASS = (0x8008, 0x0007)
ATT_SUBJECT = (0x8004, 0x0001)
ATT_DATE_SENT = (0x8005, 0x0003)
ATT_MSG_PROPS = (0x9003, 0x0006)
ATT_ATTACH_REND_DATA = (0x9002, 0x0006)
ATT_ATTACH_TITLE = (0x8010, 0x0001)
ATT_ATTACH_MODIFY_DATE = (0x8013, 0x0003)
ATT_ATTACH_DATA = (0x800F, 0x0006)
ATT_ATTACHMENT = (0x9005, 0x0006)

PT_LONG = 0x0003
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_BINARY = 0x0102

PR_BODY_W = 0x1000
PR_HTML = 0x1013
PR_RTF_COMPRESSED = 0x1009
PR_INTERNET_CPID = 0x3FDE
PR_ATTACH_METHOD = 0x3705
PR_ATTACH_LONG_FILENAME = 0x3707
PR_ATTACH_MIME_TAG = 0x370E
PR_ATTACH_CONTENT_ID = 0x3712


def _attribute(level: int, attr: tuple[int, int], data: bytes) -> bytes:
    ident, atp = attr
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, ident, atp, len(data)) + data + struct.pack("<H", checksum)


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _prop(ptype: int, pid: int, value: int | str | bytes) -> bytes:
    head = struct.pack("<HH", ptype, pid)
    if ptype == PT_LONG:
        assert isinstance(value, int)
        return head + struct.pack("<i", value)
    if ptype == PT_UNICODE:
        assert isinstance(value, str)
        raw = value.encode("utf-16-le") + b"\x00\x00"
    elif ptype == PT_STRING8:
        assert isinstance(value, str)
        raw = value.encode("cp1252") + b"\x00"
    else:
        assert isinstance(value, bytes)
        raw = value
    return head + struct.pack("<II", 1, len(raw)) + _padded(raw)


def _props(*props: bytes) -> bytes:
    return struct.pack("<I", len(props)) + b"".join(props)


def _dtr(year: int, month: int, day: int, hour: int, minute: int, second: int) -> bytes:
    weekday = 0
    return struct.pack("<7H", year, month, day, hour, minute, second, weekday)


@dataclass(frozen=True)
class TnefAttachment:
    short_name: str
    long_name: str
    mime_type: str
    data: bytes
    content_id: str | None = None


def build_tnef(
    *,
    subject: str,
    body: str | None,
    html: str | None,
    attachments: list[TnefAttachment],
    rtf: bytes | None = None,
) -> bytes:
    out = struct.pack("<IH", SIGNATURE, 0x1A2B)
    out += _attribute(LVL_MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000))
    out += _attribute(LVL_MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    out += _attribute(LVL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\x00")
    out += _attribute(LVL_MESSAGE, ATT_SUBJECT, subject.encode("cp1252") + b"\x00")
    out += _attribute(LVL_MESSAGE, ATT_DATE_SENT, _dtr(2024, 6, 11, 9, 14, 2))
    props = [_prop(PT_LONG, PR_INTERNET_CPID, 65001)]
    if body is not None:
        props.append(_prop(PT_UNICODE, PR_BODY_W, body))
    if html is not None:
        props.append(_prop(PT_BINARY, PR_HTML, html.encode("utf-8")))
    if rtf is not None:
        props.append(_prop(PT_BINARY, PR_RTF_COMPRESSED, rtf))
    out += _attribute(LVL_MESSAGE, ATT_MSG_PROPS, _props(*props))
    for att in attachments:
        rend = struct.pack("<HIHHI", 0x0001, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0)
        out += _attribute(LVL_ATTACHMENT, ATT_ATTACH_REND_DATA, rend)
        out += _attribute(LVL_ATTACHMENT, ATT_ATTACH_TITLE, att.short_name.encode("cp1252") + b"\x00")
        out += _attribute(LVL_ATTACHMENT, ATT_ATTACH_MODIFY_DATE, _dtr(2024, 6, 10, 16, 30, 0))
        out += _attribute(LVL_ATTACHMENT, ATT_ATTACH_DATA, att.data)
        aprops = [
            _prop(PT_LONG, PR_ATTACH_METHOD, 1),
            _prop(PT_UNICODE, PR_ATTACH_LONG_FILENAME, att.long_name),
            _prop(PT_STRING8, PR_ATTACH_MIME_TAG, att.mime_type),
        ]
        if att.content_id:
            aprops.append(_prop(PT_STRING8, PR_ATTACH_CONTENT_ID, att.content_id))
        out += _attribute(LVL_ATTACHMENT, ATT_ATTACHMENT, _props(*aprops))
    return out


def uncompressed_rtf(rtf: str) -> bytes:
    """PR_RTF_COMPRESSED in its "MELA" (uncompressed) form, MS-OXRTFCP §2.1.3.1."""
    raw = rtf.encode("cp1252")
    return struct.pack("<II4sI", len(raw) + 12, len(raw), b"MELA", 0) + raw


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
CSV = "Position;Menge;Preis\r\nWartung Störungsbehebung;1;480,00 €\r\n".encode("cp1252")


def build_winmail() -> bytes:
    """The winmail.dat of the Outlook TNEF fixture."""
    return build_tnef(
        subject="Angebot Wartungsvertrag",
        body="Sehr geehrte Damen und Herren,\r\n\r\nanbei unser Angebot für den Wartungsvertrag.\r\n\r\nMit freundlichen Grüßen\r\nKarl Weber\r\n",
        html=None,
        attachments=[
            TnefAttachment("ANGEBO~1.PDF", "Angebot Wartung 2024.pdf", "application/pdf", PDF),
            TnefAttachment("KOSTEN~1.CSV", "Kostenübersicht.csv", "text/csv", CSV),
        ],
        rtf=uncompressed_rtf(r"{\rtf1\ansi\ansicpg1252 Sehr geehrte Damen und Herren,\par}"),
    )
