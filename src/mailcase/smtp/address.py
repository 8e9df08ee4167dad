"""MAIL FROM / RCPT TO argument parsing with a small RFC 5321 grammar.

Why not `email.headerregistry`/`email.utils`: they parse RFC 5322 header syntax (comments,
display names, obsolete forms) and are slow; in a profiled aiosmtpd they took about a fifth of
the time. SMTP paths have a much smaller grammar (RFC 5321 §4.1.2), which compiled regular
expressions check in a few microseconds.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mailcase.smtp.replies import Reply

__all__ = [
    "MAX_DOMAIN",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "NULL_PATH",
    "AddressError",
    "Params",
    "Path",
    "parse_mail_from",
    "parse_mailbox",
    "parse_rcpt_to",
]

Params = dict[str, str | None]

# RFC 5321 §4.5.3.1.1-3: size limits, in octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256  # including "<", ">" and any source route


class AddressError(ValueError):
    """A MAIL/RCPT argument could not be accepted; `reply` is what to send back."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Path:
    """A reverse- or forward-path with the source route dropped (RFC 5321 §4.1.2, §C).

    `address` is "" for the null reverse-path `<>`; `domain` is "" for `<Postmaster>`
    (RFC 5321 §4.1.1.3). Parts are kept as sent (quotes included) so that logs show what the
    peer said.
    """

    address: str
    local_part: str
    domain: str

    @property
    def is_null(self) -> bool:
        return self.address == ""

    @property
    def normalized(self) -> str:
        """Local part as given (it may be case-sensitive, RFC 5321 §2.4), domain lowercased."""
        if not self.domain:
            return self.local_part
        return f"{self.local_part}@{self.domain.lower()}"

    def __str__(self) -> str:
        return self.address


NULL_PATH = Path("", "", "")

# --- Grammar (RFC 5321 §4.1.2, §4.1.3; RFC 6531 §3.3 adds UTF8-non-ascii) ----------------------
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_NONASCII = "\u0080-\U0010ffff"
_QTEXT = r"\x20\x21\x23-\x5b\x5d-\x7e"


def _grammar(utf8: bool) -> re.Pattern[str]:
    extra = _NONASCII if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    dot_string = f"{atom}(?:\\.{atom})*"
    quoted = f'"(?:[{_QTEXT}{extra}]|\\\\[\\x20-\\x7e])*"'
    let_dig = f"[A-Za-z0-9{extra}]"
    label = f"{let_dig}(?:[A-Za-z0-9\\-{extra}]*{let_dig})?"
    domain = f"{label}(?:\\.{label})*"
    literal = r"\[[\x21-\x5a\x5e-\x7e]+\]"  # dcontent, RFC 5321 §4.1.3; checked below
    at_domain = f"@(?:{domain}|{literal})"
    adl = f"{at_domain}(?:,{at_domain})*:"
    return re.compile(
        f"<(?:{adl})?(?P<local>{dot_string}|{quoted})"
        f"(?:@(?P<domain>{domain})|@(?P<literal>{literal}))?>"
    )


_PATH_ASCII = _grammar(False)
_PATH_UTF8 = _grammar(True)
_PARAM_ASCII = re.compile(
    r"(?P<key>[A-Za-z0-9][A-Za-z0-9\-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?"
)
_PARAM_UTF8 = re.compile(
    f"(?P<key>[A-Za-z0-9][A-Za-z0-9\\-]*)(?:=(?P<value>[\\x21-\\x3c\\x3e-\\x7e{_NONASCII}]+))?"
)
_STANDARDIZED_TAG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?")


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _literal_ok(literal: str) -> bool:
    """Address literal forms of RFC 5321 §4.1.3: IPv4, IPv6:…, or a registered tag:value."""
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    tag, sep, _value = inner.partition(":")
    if sep:
        return bool(_STANDARDIZED_TAG.fullmatch(tag))
    try:
        ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


class _Kind:
    """Replies that differ between sender and recipient (RFC 3463 §3.2: X.1.7 vs X.1.3)."""

    def __init__(self, keyword: str, enhanced: str, what: str, syntax: Reply) -> None:
        self.keyword = keyword
        self.syntax = syntax
        self.no_brackets = Reply(
            501, enhanced, f"Bad {what} address syntax: use {keyword}<user@example.com>"
        )
        self.bad = Reply(501, enhanced, f"Bad {what} address syntax")
        # RFC 5321 §4.5.3.1.10 suggests "501 Path too long".
        self.too_long = Reply(501, enhanced, f"{what.capitalize()} address too long (RFC 5321)")
        # RFC 6531 §3.5 / RFC 6533: X.6.7 for non-ASCII addresses without SMTPUTF8.
        self.non_ascii = Reply(
            553, "5.6.7", f"Non-ASCII {what} address needs the SMTPUTF8 parameter on MAIL FROM"
        )


_MAIL = _Kind(
    "MAIL FROM:",
    "5.1.7",
    "sender",
    Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]"),
)
_RCPT = _Kind(
    "RCPT TO:",
    "5.1.3",
    "recipient",
    Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]"),
)
_BAD_PARAMETER = Reply(501, "5.5.4", "Bad parameter syntax: use KEYWORD or KEYWORD=value")
_DUPLICATE_PARAMETER = Reply(501, "5.5.4", "Parameter given more than once")
_NON_ASCII_PARAMETER = Reply(501, "5.5.4", "Non-ASCII parameter needs SMTPUTF8")


def _split_keyword(arg: str, kind: _Kind) -> str:
    """Strip `FROM:`/`TO:` (case-insensitive) and, leniently like Postfix, spaces after it."""
    arg = arg.lstrip(" ")
    kw = kind.keyword[5:]  # "FROM:" / "TO:"
    n = len(kw)
    if arg[:n].upper() != kw:
        raise AddressError(kind.syntax)
    return arg[n:].lstrip(" ")


def _parse_params(text: str, utf8: bool) -> Params:
    """`esmtp-param *(SP esmtp-param)` (RFC 5321 §4.1.2); keys uppercased, bare keys → None."""
    params: Params = {}
    if not text:
        return params
    pattern = _PARAM_UTF8 if utf8 else _PARAM_ASCII
    for item in text.split(" "):
        if not item:
            continue  # tolerate repeated spaces
        m = pattern.fullmatch(item)
        if m is None:
            if not utf8 and not item.isascii():
                raise AddressError(_NON_ASCII_PARAMETER)
            raise AddressError(_BAD_PARAMETER)
        key = m.group("key").upper()
        if key in params:
            raise AddressError(_DUPLICATE_PARAMETER)
        params[key] = m.group("value")
    return params


def _parse(arg: str, kind: _Kind, utf8: bool, allow_null: bool) -> tuple[Path, Params]:
    rest = _split_keyword(arg, kind)
    if not rest.startswith("<"):
        raise AddressError(kind.no_brackets)
    if allow_null and rest.startswith("<>"):
        path, after = NULL_PATH, rest[2:]
    else:
        m = (_PATH_UTF8 if utf8 else _PATH_ASCII).match(rest)
        if m is None:
            if not utf8 and not rest.isascii() and _PATH_UTF8.match(rest) is not None:
                # Tell the peer the real reason rather than "bad syntax" (RFC 6531 §3.4).
                raise AddressError(kind.non_ascii)
            raise AddressError(kind.bad)
        whole = m.group(0)
        local = m.group("local")
        domain = m.group("domain") or m.group("literal") or ""
        # RFC 5321 §4.5.3.1: 64 / 255 / 256 octets.
        if (
            _octets(whole) > MAX_PATH
            or _octets(local) > MAX_LOCAL_PART
            or _octets(domain) > MAX_DOMAIN
        ):
            raise AddressError(kind.too_long)
        if m.group("literal") and not _literal_ok(domain):
            raise AddressError(kind.bad)
        if not domain and kind is _RCPT and local.lower() != "postmaster":
            # RFC 5321 §4.1.1.3: only <Postmaster> may come without a domain.
            raise AddressError(kind.bad)
        if not domain and kind is _MAIL:
            raise AddressError(kind.bad)
        address = f"{local}@{domain}" if domain else local
        path, after = Path(address, local, domain), rest[len(whole) :]
    if after and not after.startswith(" "):
        raise AddressError(kind.bad)
    return path, _parse_params(after[1:], utf8)


def parse_mail_from(arg: str, *, smtputf8: bool) -> tuple[Path, Params]:
    """Parse the argument of MAIL (`FROM:<path> [params]`).

    `smtputf8` says whether the server offers SMTPUTF8; UTF-8 in the path is then accepted only
    when this same command carries the SMTPUTF8 parameter (RFC 6531 §3.4).
    """
    if smtputf8 and not arg.isascii():
        path, params = _parse(arg, _MAIL, True, allow_null=True)
        if "SMTPUTF8" not in params:
            if not path.address.isascii():
                raise AddressError(_MAIL.non_ascii)
            raise AddressError(_NON_ASCII_PARAMETER)
        return path, params
    return _parse(arg, _MAIL, False, allow_null=True)


def parse_rcpt_to(arg: str, *, smtputf8: bool) -> tuple[Path, Params]:
    """Parse the argument of RCPT (`TO:<path> [params]`).

    `smtputf8` says whether SMTPUTF8 is in effect for this transaction (RFC 6531 §3.4); only
    then may the path and parameters contain UTF-8.
    """
    return _parse(arg, _RCPT, smtputf8, allow_null=False)


def parse_mailbox(text: str) -> str:
    """Validate an address an administrator typed (`support@example.test`, no brackets).

    The same grammar as RCPT applies, so that every configured address is one the SMTP side can
    actually receive. Returns the address with its domain lowercased; raises AddressError.
    """
    bad = AddressError(Reply(501, "5.1.3", f"{text!r} is not a mailbox like name@example.com"))
    try:
        path, params = parse_rcpt_to(f"TO:<{text}>", smtputf8=True)
    except AddressError:
        raise bad from None
    if params or not path.domain or path.domain.startswith("["):
        raise bad
    return path.normalized
