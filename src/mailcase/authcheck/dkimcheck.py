"""DKIM (RFC 6376) and ARC (RFC 8617) verification with dkimpy, keys fetched by our resolver.

dkimpy takes a `dnsfunc(name, timeout)` returning the key's TXT text or None; a temporary
failure is signalled by raising `dkim.DnsTimeoutError`. But `DKIM.verify` swallows both a
missing key and a DNS failure into a plain ``False`` (and logs an error), the same value as a
bad signature. To report `permerror` for a missing key, `temperror` for a DNS failure and
`fail` only for a signature that does not verify (RFC 8601 §2.7.1), our key fetcher remembers
what each lookup gave, and a False from dkimpy is classified with that record.

Why not authheaders' `check_dkim`: it looks only at the first signature and turns every error
into "fail"; its `check_arc` refers to names it never imports on its error path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import dkim  # type: ignore[import-untyped]

from mailcase.authcheck.results import ARCResult, DKIMResult, DKIMVerdict
from mailcase.dns import NoSuchRecord, Resolver, TemporaryDNSError

__all__ = ["KeyFetcher", "check_arc", "check_dkim"]

# Hostile mail may carry many signatures, each costing a DNS lookup and a hash of the body.
MAX_SIGNATURES = 10
# RFC 8301 §3.2: RSA keys under 1024 bits MUST NOT be accepted.
MIN_RSA_BITS = 1024


class _Quiet(logging.LoggerAdapter):  # type: ignore[type-arg]
    """dkimpy logs a bad remote key or signature as ERROR: for us that is input, not an
    error of ours; keep it at DEBUG so that hostile mail cannot flood the log."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


_log = _Quiet(logging.getLogger("mailcase.authcheck.dkim"), {})


@dataclass(slots=True)
class _Lookup:
    outcome: str  # "found", "missing" or "temporary"
    value: bytes | None = None
    detail: str = ""


class KeyFetcher:
    """dkimpy's `dnsfunc`, through our resolver, remembering what each lookup gave.

    One per message: it also caches, so several signatures (and ARC sets) with the same key
    ask the DNS once.
    """

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.lookups: MutableMapping[str, _Lookup] = {}

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        key = _keyname(name)
        got = self.lookups.get(key)
        if got is None:
            got = self._fetch(key)
            self.lookups[key] = got
        if got.outcome == "temporary":
            raise dkim.DnsTimeoutError(got.detail)
        return got.value

    def _fetch(self, key: str) -> _Lookup:
        try:
            answer = self.resolver.txt_sync(key)
        except NoSuchRecord as exc:
            return _Lookup("missing", detail=str(exc))
        except TemporaryDNSError as exc:
            return _Lookup("temporary", detail=str(exc))
        # RFC 6376 §3.6.2.2: the strings of one record are concatenated. Several records at
        # one name are undefined; like dkimpy's own fetcher, take the first.
        return _Lookup("found", answer.records[0].value)


def _keyname(name: bytes | str) -> str:
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    return text.rstrip(".").lower()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value) if value is not None else ""


def _signature_tags(raw: bytes) -> dict[bytes, bytes]:
    try:
        tags: dict[bytes, bytes] = dkim.util.parse_tag_value(raw)
        return tags
    except Exception:  # noqa: BLE001 - an unparsable signature is reported as such
        return {}


def check_dkim(message: bytes, fetcher: KeyFetcher) -> tuple[DKIMResult, ...]:
    """Verify every DKIM-Signature (up to `MAX_SIGNATURES`), each with its own verdict."""
    try:
        d = dkim.DKIM(message, logger=_log, minkey=MIN_RSA_BITS)
    except dkim.DKIMException as exc:
        if not _has_field(message, _DKIM_SIGNATURE):
            return ()  # not signed; the rest of the checks say what is wrong with it
        return (DKIMResult("permerror", "", "", reason=f"message not parsable: {exc}"),)
    # The same selection as dkimpy's, so that our index is its index.
    signatures = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    results = []
    for idx, raw in enumerate(signatures[:MAX_SIGNATURES]):
        results.append(_verify_one(d, idx, raw, fetcher))
    for raw in signatures[MAX_SIGNATURES:]:
        tags = _signature_tags(raw)
        results.append(_result(tags, "neutral", f"more than {MAX_SIGNATURES} signatures"))
    return tuple(results)


def _result(tags: dict[bytes, bytes], verdict: DKIMVerdict, reason: str = "") -> DKIMResult:
    b = re.sub(rb"\s+", b"", tags.get(b"b", b""))[:12]
    return DKIMResult(
        result=verdict,
        domain=_text(tags.get(b"d", b"")).lower(),
        selector=_text(tags.get(b"s", b"")),
        algorithm=_text(tags.get(b"a", b"")),
        identity=_text(tags.get(b"i", b"")),
        b=_text(b),
        reason=reason,
    )


def _verify_one(d: Any, idx: int, raw: bytes, fetcher: KeyFetcher) -> DKIMResult:
    tags = _signature_tags(raw)
    if not tags:
        return _result(tags, "neutral", "signature not parsable")
    if tags.get(b"a", b"").strip().lower() == b"rsa-sha1":
        # RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 signatures valid.
        return _result(tags, "policy", "rsa-sha1 is not accepted (RFC 8301)")
    try:
        ok = d.verify(idx=idx, dnsfunc=fetcher)
    except dkim.NaClNotFoundError:
        return _result(tags, "neutral", "ed25519 signatures need PyNaCl, which is not installed")
    except dkim.KeyFormatError as exc:
        return _result(tags, "permerror", f"key not usable: {exc}")
    except dkim.UnknownKeyTypeError as exc:
        return _result(tags, "permerror", f"unknown key type: {exc}")
    except dkim.ValidationError as exc:
        # body hash mismatch, expired (x=), i= outside d=, missing tags ...
        reason = str(exc)
        if reason.startswith("body hash mismatch"):
            reason = "body hash mismatch"  # without the two digests dkimpy appends
        return _result(tags, "fail", reason)
    except dkim.DKIMException as exc:  # MessageFormatError, ParameterError ...
        return _result(tags, "neutral", str(exc))
    except Exception as exc:  # noqa: BLE001
        # dkimpy indexes and decodes hostile input without guards in places; one odd
        # signature must not stop the message from being processed.
        _log.debug("dkimpy failed on a signature", exc_info=True)
        return _result(tags, "neutral", f"signature not verifiable ({type(exc).__name__})")
    if ok:
        return _result(tags, "pass")
    # dkimpy said False: a bad signature, or a key it could not get or use. Ask the fetcher.
    name = _keyname(tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b""))
    looked = fetcher.lookups.get(name)
    if looked is None:
        return _result(tags, "fail", "signature did not verify")
    if looked.outcome == "temporary":
        return _result(tags, "temperror", f"key lookup failed: {looked.detail}")
    if looked.outcome == "missing":
        return _result(tags, "permerror", "no key for signature")
    try:
        dkim.evaluate_pk(name.encode(), looked.value)
    except dkim.DKIMException as exc:
        return _result(tags, "permerror", f"key not usable: {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. binascii.Error on bad base64 in p=
        return _result(tags, "permerror", f"key not usable: {exc}")
    return _result(tags, "fail", "signature did not verify")


_ARC_SEAL = re.compile(rb"arc-seal", re.IGNORECASE)
_DKIM_SIGNATURE = re.compile(rb"dkim-signature", re.IGNORECASE)


def _has_field(message: bytes, name: re.Pattern[bytes]) -> bool:
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return any(
        name.fullmatch(line.split(b":", 1)[0].strip())
        for line in head.splitlines()
        if line[:1] not in (b" ", b"\t") and b":" in line
    )


def has_arc(message: bytes) -> bool:
    """True when the message carries at least one ARC-Seal header field."""
    return _has_field(message, _ARC_SEAL)


def check_arc(message: bytes, fetcher: KeyFetcher) -> ARCResult | None:
    """Validate the ARC chain (RFC 8617 §5.2); None when the message has no ARC set."""
    if not has_arc(message):
        return None
    try:
        a = dkim.ARC(message, logger=_log, minkey=MIN_RSA_BITS)
        cv, sets, comment = a.verify(dnsfunc=fetcher)
    except dkim.DKIMException as exc:
        return ARCResult("fail", 0, str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. IndexError on an oddly spaced i= tag
        _log.debug("dkimpy failed on an ARC chain", exc_info=True)
        return ARCResult("fail", 0, f"ARC chain not verifiable ({type(exc).__name__})")
    instances = len(sets)
    if cv == dkim.CV_Pass:
        return ARCResult("pass", instances)
    if cv == dkim.CV_None:
        return ARCResult("none", instances, _text(comment))
    # CV_Fail, or None: an earlier hop already recorded the chain as failed (cv=fail).
    reason = _text(comment)
    if any(v.outcome == "temporary" for v in fetcher.lookups.values()):
        # RFC 8617 has no temperror; say why in the reason so that a retry can be considered.
        reason = f"{reason}; a key lookup failed temporarily".lstrip("; ")
    return ARCResult("fail", instances, reason)
