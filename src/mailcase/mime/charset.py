"""Bytes to text for any label a mail client ever put in `charset=`, never failing.

Order of trust, and why:

1. The declared charset, mapped to the superset clients really use (the WHATWG Encoding
   Standard does the same for browsers): `iso-8859-1`/`us-ascii` text is in practice
   windows-1252, `gb2312` is GB18030, `shift_jis` is cp932, `ks_c_5601-1987`/`euc-kr` is cp949,
   and `iso-2022-jp` mail carries JIS X 0212/0213 and half-width kana that Python's strict
   `iso2022_jp` codec refuses, so a chain of supersets is tried.
2. UTF-8, when nothing (or something unknown) is declared: it is what RFC 6532 mailers send,
   and valid UTF-8 is almost never accidental.
3. windows-1252, when it decodes and the result reads like Western text: "windows-1252
   labelled utf-8" is the most common mislabel (Outlook on Western locales), and
   charset-normalizer guesses badly on short texts (measured: cp775 for a German sentence).
4. charset-normalizer for the rest (Cyrillic, Central European, Asian texts without a label).
5. latin-1, which decodes any byte string, so decoding itself can never fail.

Codecs that are not character sets (`unicode_escape`, `idna`, `rot13`, compression codecs)
are refused even though Python can look them up: a sender must not pick our transform.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes

__all__ = ["DecodedText", "decode_text", "looks_binary", "repair_surrogates", "resolve_charset"]

# Label (lower case) → the codecs to try, in order. Mostly WHATWG supersets (see docstring).
_SUPERSETS: dict[str, tuple[str, ...]] = {
    "us-ascii": ("ascii",),
    "ascii": ("ascii",),
    "iso-8859-1": ("cp1252",),
    "iso8859-1": ("cp1252",),
    "latin1": ("cp1252",),
    "latin-1": ("cp1252",),
    "l1": ("cp1252",),
    "iso-8859-9": ("cp1254",),
    "iso-8859-11": ("cp874",),
    "tis-620": ("cp874",),
    "windows-874": ("cp874",),
    "iso-8859-8-i": ("iso8859_8",),
    "iso-8859-6-i": ("iso8859_6",),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "x-gbk": ("gb18030",),
    "cp936": ("gb18030",),
    "euc-cn": ("gb18030",),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "shift-jis": ("cp932", "shift_jis_2004"),
    "sjis": ("cp932",),
    "x-sjis": ("cp932",),
    "ms_kanji": ("cp932",),
    "windows-31j": ("cp932",),
    "euc-jp": ("euc_jp", "euc_jis_2004"),
    "iso-2022-jp": ("iso2022_jp", "x-cp50220", "iso2022_jp_2", "iso2022_jp_2004"),
    "csiso2022jp": ("iso2022_jp", "x-cp50220", "iso2022_jp_2", "iso2022_jp_2004"),
    "cp50220": ("x-cp50220",),
    "cp50221": ("x-cp50220",),
    "ks_c_5601-1987": ("cp949",),
    "ks_c_5601": ("cp949",),
    "euc-kr": ("cp949",),
    "big5": ("big5hkscs",),
    "x-mac-roman": ("mac_roman",),
    "macintosh": ("mac_roman",),
    "unicode-1-1-utf-8": ("utf-8",),
    "utf8": ("utf-8",),
    "x-unknown": (),
    "unknown-8bit": (),
}

# Python codecs that decode bytes to str but are transforms, not character sets.
_NOT_CHARSETS = frozenset(
    {
        "unicode_escape",
        "raw_unicode_escape",
        "idna",
        "punycode",
        "undefined",
        "mbcs",
        "oem",
        "charmap",
        "unicode_internal",
        "palmos",
    }
)

_WESTERN_EXTRA = frozenset("€‚„…†‡‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ°§©®«»£¥¢·½¼¾ªº¡")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class DecodedText:
    """The text, the codec that produced it, and why it is not the declared one (or None)."""

    text: str
    charset: str
    note: str | None = None


def _decode_cp50220(data: bytes) -> str:
    """ISO-2022-JP as Windows reads it: each JIS X 0208 pair re-encoded as cp932 (Shift_JIS).

    Handles ESC $ B / ESC $ @ (JIS X 0208, NEC and IBM rows included), ESC ( B / ESC ( J
    (ASCII / Roman), ESC ( I and SO/SI (half-width katakana). Raises UnicodeDecodeError on
    anything else so the next codec in the chain is tried.
    """
    out = bytearray()
    mode = "ascii"
    shifted = False
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            seq = data[i : i + 3]
            if seq in (b"\x1b$B", b"\x1b$@"):
                mode = "jis"
            elif seq in (b"\x1b(B", b"\x1b(J"):
                mode = "ascii"
            elif seq == b"\x1b(I":
                mode = "kana"
            else:
                raise UnicodeDecodeError("cp50220", data, i, i + 1, "unsupported escape")
            i += 3
            continue
        if b == 0x0E or b == 0x0F:
            shifted = b == 0x0E
            i += 1
            continue
        if b >= 0x80:
            raise UnicodeDecodeError("cp50220", data, i, i + 1, "8-bit byte")
        if b < 0x21 or b == 0x7F:
            out.append(b)  # controls and space are single bytes in every mode
            i += 1
        elif shifted or mode == "kana":
            if b > 0x5F:
                raise UnicodeDecodeError("cp50220", data, i, i + 1, "not a kana byte")
            out.append(b + 0x80)
            i += 1
        elif mode == "jis":
            if i + 1 >= n or not 0x21 <= data[i + 1] <= 0x7E:
                raise UnicodeDecodeError("cp50220", data, i, i + 2, "truncated pair")
            j1, j2 = b, data[i + 1]
            s1 = ((j1 - 0x21) >> 1) + 0x81
            if s1 > 0x9F:
                s1 += 0x40
            if j1 & 1:
                s2 = j2 + 0x1F + (1 if j2 >= 0x60 else 0)
            else:
                s2 = j2 + 0x7E
            out += bytes((s1, s2))
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out).decode("cp932")


def _decode(data: bytes, codec: str) -> str:
    if codec == "x-cp50220":
        return _decode_cp50220(data)
    return data.decode(codec)


def resolve_charset(label: str | None) -> tuple[str, ...] | None:
    """The codecs to try for a declared label; () for a known "unknown"; None if unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = name.split("*", 1)[0]  # RFC 2231 §5: charset*language
    if not name or len(name) > 40:
        return None
    if name in _SUPERSETS:
        return _SUPERSETS[name]
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _NOT_CHARSETS:
        return None
    return (info.name,)


def looks_binary(data: bytes) -> bool:
    """True when bytes are not text in any 8-bit or multi-byte charset: NULs or many controls.

    (UTF-16 is the exception and is only decoded when declared.)
    """
    if not data:
        return False
    sample = data[:4096]
    if b"\x00" in sample:
        return True
    return len(_CONTROL.findall(sample)) * 20 > len(sample)


def _reads_western(text: str) -> bool:
    """Whether a windows-1252 decoding looks like a Western European text, not mojibake."""
    letters = 0
    foreign = 0
    for ch in text:
        if ch.isascii():
            if ch.isalpha():
                letters += 1
            continue
        if ch.isalpha() and "\u00c0" <= ch <= "\u00ff" and ch not in "×÷":
            letters += 1
            foreign += 1
        elif ch in _WESTERN_EXTRA or ch == "\u00a0":
            continue
        else:
            return False
    return letters > 0 and foreign * 10 <= letters * 4


def _guess(data: bytes) -> DecodedText:
    """Steps 2-5 of the module docstring for bytes whose label did not work."""
    try:
        return DecodedText(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    try:
        western = data.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and _reads_western(western):
        return DecodedText(western, "cp1252")
    try:
        best = from_bytes(data).best()
    except Exception:  # noqa: BLE001 - charset-normalizer is heuristic code: never let it fail a message
        best = None
    if best is not None and best.encoding:
        try:
            return DecodedText(data.decode(best.encoding), best.encoding)
        except (UnicodeDecodeError, LookupError):
            pass
    if western is not None:
        return DecodedText(western, "cp1252")
    return DecodedText(data.decode("latin-1"), "latin-1")


def decode_text(data: bytes, label: str | None = None) -> DecodedText:
    """Decode `data` declared as `label` (may be None); never raises.

    `note` is set when the declared charset was unknown or did not fit the bytes.
    """
    if data.startswith(codecs.BOM_UTF8):
        return DecodedText(data[3:].decode("utf-8", "replace"), "utf-8")
    candidates = resolve_charset(label)
    if candidates:
        for codec in candidates:
            try:
                return DecodedText(_decode(data, codec), codec)
            except (UnicodeDecodeError, LookupError):
                continue
        if candidates == ("ascii",):
            # RFC 2045 default; 8-bit bytes under it are UTF-8 or a local charset.
            guessed = _guess(data)
            return DecodedText(guessed.text, guessed.charset, f"8-bit bytes labelled {label}")
    if data.isascii():
        note = f"unknown charset {label!r}" if label and candidates is None else None
        return DecodedText(data.decode("ascii"), "ascii", note)
    guessed = _guess(data)
    if not label:
        note = None if guessed.charset == "utf-8" else "8-bit text without a charset"
    elif candidates is None or candidates == ():
        note = f"unknown charset {label!r}"
    else:
        note = f"bytes are not valid {label}"
    if note is None:
        return guessed
    return DecodedText(guessed.text, guessed.charset, f"{note}; decoded as {guessed.charset}")


def repair_surrogates(text: str, label: str | None = None) -> str:
    """Re-decode the raw bytes that the stdlib parser carried as lone surrogates.

    `email` keeps undecodable header bytes as surrogateescape code points (U+DC80-U+DCFF);
    turning them back into bytes and decoding them properly gives readable names instead.
    """
    if not _SURROGATE.search(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte: nothing to recover
        return text.encode("utf-8", "replace").decode("utf-8")
    return decode_text(raw, label).text
