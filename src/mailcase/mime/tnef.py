"""Unpacking Outlook's TNEF container (`winmail.dat`, application/ms-tnef) with tnefparse.

Outlook sends TNEF when "Rich Text" format is chosen: the real attachments are inside it and
a user who gets a `winmail.dat` cannot open them. tnefparse does the binary work; this module
only reads its result defensively (it raises struct errors, UnboundLocalError or decode errors
on damaged input, and reads 8-bit names as UTF-8) and decodes names and bodies with our
charset fallbacks.

Outlook's own body is usually compressed RTF only (PR_RTF_COMPRESSED); decoding it would need
the compressed-rtf and rtfde packages, which mailcase does not depend on: such a body is
reported (`has_rtf_body`) and the winmail.dat is then kept as an attachment too.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any

from tnefparse import properties as mapi  # type: ignore[import-untyped]
from tnefparse.tnef import TNEF  # type: ignore[import-untyped]

from mailcase.mime.charset import decode_text

__all__ = ["TnefContent", "TnefFile", "is_tnef", "unpack_tnef"]

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78 little-endian (MS-OXTNEF §2.1.3.1)


@dataclass(frozen=True, slots=True)
class TnefFile:
    """One attachment found inside a TNEF container."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None


@dataclass(frozen=True, slots=True)
class TnefContent:
    """What a TNEF container held; `error` is set (and the rest empty) when it did not parse."""

    files: tuple[TnefFile, ...] = ()
    body: str | None = None
    html: str | None = None
    has_rtf_body: bool = False
    bad_checksum: bool = False
    error: str | None = None


def is_tnef(content_type: str, filename: str, data: bytes) -> bool:
    """application/ms-tnef, or a `winmail.dat` that starts with the TNEF signature."""
    if content_type in {"application/ms-tnef", "application/vnd.ms-tnef"}:
        return True
    return filename.lower() == "winmail.dat" and data.startswith(TNEF_SIGNATURE)


def _to_text(value: Any, codepage: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return decode_text(value.rstrip(b"\x00"), codepage or "cp1252").text
    if isinstance(value, str):
        return value.rstrip("\x00")
    return None


def _attr(attachment: Any, name: int) -> Any:
    for attr in getattr(attachment, "mapi_attrs", ()):
        if attr.name == name:
            return attr.data
    return None


def _file(attachment: Any, index: int, codepage: str | None) -> TnefFile:
    name = _to_text(_attr(attachment, mapi.MAPI_ATTACH_LONG_FILENAME), codepage)
    if not name:
        # tnefparse decodes the short (8.3) title as UTF-8 and raises on cp1252: read raw.
        name = _to_text(getattr(attachment, "_name", None), codepage)
    name = name or f"attachment-{index}"
    ctype = _to_text(_attr(attachment, mapi.MAPI_ATTACH_MIME_TAG), codepage) or ""
    ctype = ctype.strip().lower()
    if "/" not in ctype:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    cid = _to_text(_attr(attachment, mapi.MAPI_ATTACH_CONTENT_ID), codepage)
    data = getattr(attachment, "data", b"")
    return TnefFile(
        filename=name,
        content_type=ctype,
        data=data if isinstance(data, bytes) else b"",
        content_id=cid.strip("<> ") or None if cid else None,
    )


def unpack_tnef(data: bytes) -> TnefContent:
    """The attachments and bodies of a TNEF container; never raises."""
    try:
        tnef = TNEF(data, do_checksum=True)
        codepage = tnef.codepage if isinstance(tnef.codepage, str) else None
        files = tuple(_file(a, i, codepage) for i, a in enumerate(tnef.attachments, 1))
        return TnefContent(
            files=files,
            body=_to_text(tnef.body, codepage),
            html=_to_text(tnef.htmlbody, codepage),
            has_rtf_body=bool(getattr(tnef, "_rtfbody", None)),
            bad_checksum=any(not o.good_checksum for o in tnef.objects),
        )
    except Exception as exc:  # noqa: BLE001 - tnefparse: struct.error, UnboundLocalError, decode errors …
        return TnefContent(error=f"{type(exc).__name__}: {exc}"[:200])
