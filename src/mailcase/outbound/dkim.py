"""DKIM keys per sending domain and signing of outbound mail (dkimpy).

Why it works this way:

- Keys are generated here (RSA-2048 or Ed25519, RFC 8463) and kept in the database with the
  private half encrypted (AES-GCM, key derived with HKDF from the server secret, the domain and
  selector as associated data): a database dump or replica alone cannot sign as our domains.
  A private key is never printed, logged or returned by the API.
- A key signs only when its DNS record is found and matches (algorithm and public key): a
  signature that receivers cannot verify is worse than none (DMARC fails instead of falling
  back to SPF). The lookup result is trusted for `dkim.check_interval` seconds per process.
- Rotation publishes first, switches later: `rotate` makes a key on the alternate selector
  (state pending); signing moves to it as soon as its record is found, and `check` then marks
  it active and retires the old one. The old record should stay published for a few days so
  mail in flight still verifies.
- The signing domain is the From header's (DMARC alignment), else the envelope sender's.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import time
from dataclasses import dataclass
from email.utils import getaddresses

import dkim as dkimpy  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection, Engine

from mailcase.config import Settings
from mailcase.dns import Resolver
from mailcase.dns.resolver import NoSuchRecord, TemporaryDNSError
from mailcase.outbound.dkim_models import DKIM_ALGORITHMS, dkim_keys
from mailcase.storage import addresses
from mailcase.storage.db import begin_write
from mailcase.storage.models import utcnow

__all__ = [
    "SIGNED_HEADERS",
    "CheckResult",
    "DKIMError",
    "DKIMKeyInfo",
    "check_domain",
    "check_record",
    "create_key",
    "dns_name",
    "dns_record",
    "zone_line",
    "list_keys",
    "maintain",
    "rotate",
    "rotation_due",
    "sign_for_delivery",
    "sign_with",
    "signing_domain",
]

log = logging.getLogger(__name__)

#: Header fields signed when present (From always).
SIGNED_HEADERS = (
    "From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "In-Reply-To", "References",
)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_SELECTOR = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HKDF_INFO = b"mailcase dkim private key v1"
_TEMP_RETRY = 60.0  # seconds a temporary DNS failure is remembered


class DKIMError(ValueError):
    """A DKIM request that cannot be done as asked (bad domain, no such key ...)."""


@dataclass(frozen=True, slots=True)
class DKIMKeyInfo:
    """A key as listed: never the private half."""

    domain: str
    selector: str
    algorithm: str
    state: str
    dns_name: str
    dns_record: str
    created_at: dt.datetime
    checked_at: dt.datetime | None
    check_result: str | None
    activated_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What the DNS said about one key's record."""

    selector: str
    found: bool
    temporary: bool
    detail: str


# ---------------------------------------------------------------- keys and records


def _norm_domain(domain: str) -> str:
    d = domain.strip().rstrip(".").lower()
    try:
        d = d.encode("idna").decode("ascii")
    except UnicodeError:
        raise DKIMError(f"{domain!r} is not a valid domain name") from None
    if not _DOMAIN.match(d):
        raise DKIMError(f"{domain!r} is not a valid domain name")
    return d


def _norm_selector(selector: str) -> str:
    s = selector.strip().lower()
    if not _SELECTOR.match(s):
        raise DKIMError(f"{selector!r} is not a valid selector (letters, digits, hyphens)")
    return s


def dns_name(domain: str, selector: str) -> str:
    """Where the key's record is published (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


def dns_record(algorithm: str, public_key: str) -> str:
    """The TXT record to publish."""
    return f"v=DKIM1; k={algorithm}; p={public_key}"


def zone_line(info: DKIMKeyInfo) -> str:
    """The record as a zone-file line; long values split into strings of at most 255 octets
    (RFC 7208 §3.3 style: receivers join them), as DNS servers need for RSA keys."""
    value = info.dns_record
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
    return f"{info.dns_name}. IN TXT " + " ".join(f'"{c}"' for c in chunks)


def _generate(algorithm: str) -> tuple[bytes, str]:
    """(private key as dkimpy takes it, public key base64 for p=)."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return private, base64.b64encode(spki).decode("ascii")
    if algorithm == "ed25519":
        ed = ed25519.Ed25519PrivateKey.generate()
        seed = ed.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw_pub = ed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(seed), base64.b64encode(raw_pub).decode("ascii")
    raise DKIMError(f"algorithm must be one of {', '.join(DKIM_ALGORITHMS)}, not {algorithm!r}")


def _aad(domain: str, selector: str) -> bytes:
    return f"{domain}\0{selector}".encode()


def _encrypt(settings: Settings, domain: str, selector: str, private: bytes) -> bytes:
    from mailcase.secrets import seal

    return seal(settings, _HKDF_INFO, private, _aad(domain, selector))


def _decrypt(settings: Settings, domain: str, selector: str, blob: bytes) -> bytes:
    from mailcase.secrets import unseal

    return unseal(settings, _HKDF_INFO, blob, _aad(domain, selector))


def _info(row: object) -> DKIMKeyInfo:
    r = row._mapping  # type: ignore[attr-defined]
    return DKIMKeyInfo(
        domain=r["domain"],
        selector=r["selector"],
        algorithm=r["algorithm"],
        state=r["state"],
        dns_name=dns_name(r["domain"], r["selector"]),
        dns_record=dns_record(r["algorithm"], r["public_key"]),
        created_at=r["created_at"],
        checked_at=r["checked_at"],
        check_result=r["check_result"],
        activated_at=r["activated_at"],
    )


_PUBLIC_COLUMNS = [c for c in dkim_keys.c if c.name != "private_key"]


def list_keys(engine: Engine, domain: str | None = None) -> list[DKIMKeyInfo]:
    """Every key (or one domain's), newest first."""
    stmt = select(*_PUBLIC_COLUMNS).order_by(dkim_keys.c.domain, dkim_keys.c.id.desc())
    if domain is not None:
        stmt = stmt.where(dkim_keys.c.domain == _norm_domain(domain))
    with engine.connect() as conn:
        return [_info(r) for r in conn.execute(stmt)]


def _insert_key(
    conn: Connection, settings: Settings, domain: str, selector: str, algorithm: str
) -> None:
    private, public = _generate(algorithm)
    addresses.bump_generation(conn)  # other processes' key caches reload (`_candidates`)
    conn.execute(
        dkim_keys.insert().values(
            domain=domain,
            selector=selector,
            algorithm=algorithm,
            public_key=public,
            private_key=_encrypt(settings, domain, selector, private),
            state="pending",
            created_at=utcnow(),
        )
    )


def create_key(
    engine: Engine,
    settings: Settings,
    domain: str,
    *,
    selector: str | None = None,
    algorithm: str = "rsa",
) -> DKIMKeyInfo:
    """A new key for `domain` (pending until its record is found); DKIMError if it exists."""
    d = _norm_domain(domain)
    s = _norm_selector(selector or settings.dkim.selector)
    if algorithm not in DKIM_ALGORITHMS:
        raise DKIMError(f"algorithm must be one of {', '.join(DKIM_ALGORITHMS)}")
    with begin_write(engine) as conn:
        exists = conn.execute(
            select(dkim_keys.c.state).where(dkim_keys.c.domain == d, dkim_keys.c.selector == s)
        ).first()
        if exists is not None:
            raise DKIMError(
                f"{d} already has a key with selector {s!r} ({exists.state}); "
                "use `mailcase dkim rotate` for a new one or another --selector"
            )
        _insert_key(conn, settings, d, s, algorithm)
    _forget(d)
    return list_keys(engine, d)[0]


def rotate(engine: Engine, settings: Settings, domain: str, *, algorithm: str | None = None) -> (
    DKIMKeyInfo
):
    """Start a rotation: a new pending key on the other selector (publish its record next)."""
    d = _norm_domain(domain)
    primary = _norm_selector(settings.dkim.selector)
    alternate = _norm_selector(settings.dkim.alternate_selector)
    if primary == alternate:
        raise DKIMError("dkim.selector and dkim.alternate_selector must differ to rotate")
    with begin_write(engine) as conn:
        rows = conn.execute(
            select(dkim_keys.c.id, dkim_keys.c.selector, dkim_keys.c.state,
                   dkim_keys.c.algorithm)
            .where(dkim_keys.c.domain == d)
            .order_by(dkim_keys.c.id.desc())
        ).all()
        live = [r for r in rows if r.state != "retired"]
        if not live:
            raise DKIMError(f"{d} has no key to rotate; create one with `mailcase dkim create`")
        current = next((r for r in live if r.state == "active"), live[0])
        if any(r.state == "pending" and r.id != current.id for r in live):
            raise DKIMError(
                f"a rotation of {d} is already waiting for its DNS record; "
                "publish it and run `mailcase dkim check`"
            )
        new_selector = alternate if current.selector == primary else primary
        # A retired key on the selector we go back to is replaced (its record is reused).
        conn.execute(
            delete(dkim_keys).where(
                dkim_keys.c.domain == d,
                dkim_keys.c.selector == new_selector,
                dkim_keys.c.state == "retired",
            )
        )
        if any(r.selector == new_selector and r.state != "retired" for r in live):
            raise DKIMError(f"selector {new_selector!r} of {d} is still in use")
        _insert_key(conn, settings, d, new_selector, algorithm or current.algorithm)
    _forget(d)
    return next(k for k in list_keys(engine, d) if k.selector == new_selector)


def rotation_due(key: DKIMKeyInfo, settings: Settings, now: dt.datetime | None = None) -> bool:
    """Is this active key older than `dkim.rotate_days`?"""
    days = settings.dkim.rotate_days
    if days <= 0 or key.state != "active":
        return False
    since = key.activated_at or key.created_at
    return (now or utcnow()) - since >= dt.timedelta(days=days)


def _tags(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            out.setdefault(name.strip().lower(), re.sub(r"\s+", "", value))
    return out


def check_record(
    resolver: Resolver, domain: str, selector: str, algorithm: str, public_key: str
) -> CheckResult:
    """Look the record up and compare it with the key (algorithm and public key)."""
    name = dns_name(domain, selector)
    try:
        answer = resolver.txt_sync(name)
    except NoSuchRecord:
        return CheckResult(selector, False, False, f"no TXT record at {name}")
    except TemporaryDNSError as e:
        return CheckResult(selector, False, True, f"DNS lookup of {name} failed: {e}")
    seen: list[str] = []
    for rec in answer.records:
        tags = _tags(rec.text)
        if "p" not in tags:
            continue
        if tags.get("v", "DKIM1") != "DKIM1":
            seen.append("v= is not DKIM1")
            continue
        if tags.get("k", "rsa").lower() != algorithm:
            seen.append(f"k={tags.get('k', 'rsa')} but the key is {algorithm}")
            continue
        if tags["p"] != public_key:
            seen.append("p= is a different public key")
            continue
        return CheckResult(selector, True, False, f"record at {name} matches")
    why = "; ".join(seen) or "no DKIM key record"
    return CheckResult(selector, False, False, f"{name}: {why}")


def _resolver(settings: Settings) -> Resolver:
    return Resolver(settings.dns.nameservers, timeout=settings.dns.timeout)


def check_domain(
    engine: Engine, settings: Settings, domain: str, *, resolver: Resolver | None = None
) -> list[CheckResult]:
    """Check every live key of `domain`, record what was found and switch keys accordingly.

    The newest key whose record matches becomes active and older ones are retired; a key
    whose record is gone falls back to pending. Temporary DNS failures change nothing.
    """
    d = _norm_domain(domain)
    res = resolver or _resolver(settings)
    with engine.connect() as conn:
        rows = conn.execute(
            select(dkim_keys.c.id, dkim_keys.c.selector, dkim_keys.c.algorithm,
                   dkim_keys.c.public_key, dkim_keys.c.state)
            .where(dkim_keys.c.domain == d, dkim_keys.c.state != "retired")
            .order_by(dkim_keys.c.id.desc())
        ).all()
    if not rows:
        raise DKIMError(f"{d} has no DKIM key; create one with `mailcase dkim create {d}`")
    results = [check_record(res, d, r.selector, r.algorithm, r.public_key) for r in rows]
    now = utcnow()
    winner = next((r.id for r, c in zip(rows, results, strict=True) if c.found), None)
    with begin_write(engine) as conn:
        for r, c in zip(rows, results, strict=True):
            values: dict[str, object] = {"checked_at": now, "check_result": c.detail}
            if c.temporary:
                pass
            elif r.id == winner:
                if r.state != "active":
                    values.update(state="active", activated_at=now)
            elif winner is not None and r.id < winner:
                values.update(state="retired", retired_at=now)
            elif r.state == "active" and not c.found:
                values.update(state="pending")
            conn.execute(update(dkim_keys).where(dkim_keys.c.id == r.id).values(**values))
            if "state" in values:
                # Signing in every process switches now, not when its key cache expires:
                # "active" in `dkim check` means signing with it from now on.
                addresses.bump_generation(conn)
    _forget(d)
    # What was just looked up is what signing would look up: keep it for check_interval.
    now_m = time.monotonic()
    ttl = settings.dkim.check_interval
    with _lock:
        _maintained[(str(engine.url), d)] = now_m + ttl
        for r, c in zip(rows, results, strict=True):
            if c.temporary:
                continue
            _record_cache[(d, r.id, r.public_key)] = (now_m + ttl, c.found, now)
    return results


def maintain(
    engine: Engine, settings: Settings, domain: str, *, resolver: Resolver | None = None
) -> tuple[list[CheckResult], DKIMKeyInfo | None]:
    """`check_domain`, then start a rotation if the active key is older than
    `dkim.rotate_days` and none is waiting; returns the results and the new key, if any."""
    results = check_domain(engine, settings, domain, resolver=resolver)
    keys = list_keys(engine, domain)
    rotated = None
    if not any(k.state == "pending" for k in keys) and any(
        rotation_due(k, settings) for k in keys
    ):
        rotated = rotate(engine, settings, domain)
        log.warning(
            "DKIM rotation of %s started: publish %s. IN TXT \"%s\"; signing switches to it "
            "once it is found", rotated.domain, rotated.dns_name, rotated.dns_record,
        )
    return results, rotated


# ---------------------------------------------------------------- signing


@dataclass(slots=True)
class _Candidate:
    id: int
    domain: str
    selector: str
    algorithm: str
    public_key: str
    private_blob: bytes
    state: str
    checked_at: dt.datetime | None


_lock = threading.Lock()
#: (database, domain) -> (expires, settings generation, keys)
_keys_cache: dict[tuple[str, str], tuple[float, int, list[_Candidate]]] = {}
#: (domain, key id, public key) -> (expires, usable, when it was learnt)
_record_cache: dict[tuple[str, int, str], tuple[float, bool, dt.datetime]] = {}
_KEYS_TTL = 30.0  # seconds at most a domain's key list is reused (a key change: at once)
_maintained: dict[tuple[str, str], float] = {}


def _forget(domain: str) -> None:
    with _lock:
        for k in [k for k in _keys_cache if k[1] == domain]:
            del _keys_cache[k]
        for k in [k for k in _maintained if k[1] == domain]:
            del _maintained[k]
        for k2 in [k for k in _record_cache if k[0] == domain]:
            del _record_cache[k2]


def _candidates(engine: Engine, domain: str) -> list[_Candidate]:
    """The domain's live keys, cached until the settings generation changes (every key
    change bumps it, in whichever process) or `_KEYS_TTL` passes: one small read per message
    instead of loading the keys."""
    key = (str(engine.url), domain)
    now = time.monotonic()
    with engine.connect() as conn:
        gen = addresses.generation_in(conn)
        with _lock:
            hit = _keys_cache.get(key)
        if hit is not None and hit[0] > now and hit[1] == gen:
            return hit[2]
        rows = conn.execute(
            select(dkim_keys.c.id, dkim_keys.c.domain, dkim_keys.c.selector,
                   dkim_keys.c.algorithm, dkim_keys.c.public_key, dkim_keys.c.private_key,
                   dkim_keys.c.state, dkim_keys.c.checked_at)
            .where(dkim_keys.c.domain == domain, dkim_keys.c.state != "retired")
            .order_by(dkim_keys.c.id.desc())
        ).all()
    found = [_Candidate(r.id, r.domain, r.selector, r.algorithm, r.public_key,
                        bytes(r.private_key), r.state, r.checked_at) for r in rows]
    with _lock:
        _keys_cache[key] = (now + _KEYS_TTL, gen, found)
    return found


def _usable(settings: Settings, c: _Candidate) -> bool:
    """Is the key's record published and matching (cached for `check_interval` seconds)?

    A check recorded in the database after our own lookup (`dkim check` in another process)
    wins at once: publishing a record and checking it takes effect without waiting."""
    key = (c.domain, c.id, c.public_key)
    now = time.monotonic()
    with _lock:
        hit = _record_cache.get(key)
    if hit is not None and c.checked_at is not None and c.checked_at > hit[2]:
        ok = c.state == "active"
        with _lock:
            _record_cache[key] = (now + settings.dkim.check_interval, ok, c.checked_at)
        return ok
    if hit is not None and hit[0] > now:
        return hit[1]
    result = check_record(_resolver(settings), c.domain, c.selector, c.algorithm, c.public_key)
    if result.temporary:
        ok, ttl = c.state == "active", _TEMP_RETRY  # last known state until DNS answers
    else:
        ok, ttl = result.found, settings.dkim.check_interval
    with _lock:
        _record_cache[key] = (now + ttl, ok, utcnow())
    if not ok:
        log.info("DKIM key %s of %s not used: %s", c.selector, c.domain, result.detail)
    return ok


def _maintenance_due(engine: Engine, settings: Settings, domain: str) -> bool:
    key = (str(engine.url), domain)
    now = time.monotonic()
    with _lock:
        due = _maintained.get(key, 0.0) <= now
        if due:
            _maintained[key] = now + settings.dkim.check_interval
    return due


_FROM = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def signing_domain(mail_from: str, content: bytes) -> str | None:
    """The From header's domain (DMARC alignment), else the envelope sender's."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    m = _FROM.search(head)
    if m is not None:
        value = m.group(1).decode("utf-8", "replace").replace("\r\n", " ").strip()
        for _, addr in getaddresses([value]):
            if "@" in addr:
                return addr.rpartition("@")[2].strip().rstrip(".").lower() or None
    if "@" in mail_from:
        return mail_from.rpartition("@")[2].strip("<> ").rstrip(".").lower() or None
    return None


def sign_with(
    content: bytes, domain: str, selector: str, algorithm: str, private: bytes
) -> bytes:
    """`content` with a DKIM-Signature header prepended (relaxed/relaxed)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    present = {
        m.group(1).lower()
        for m in re.finditer(rb"^([A-Za-z0-9-]+)[ \t]*:", head, re.MULTILINE)
    }
    headers = [h.lower().encode() for h in SIGNED_HEADERS if h.lower().encode() in present]
    if b"from" not in headers:
        headers.insert(0, b"from")
    sig: bytes = dkimpy.sign(
        content,
        selector.encode(),
        domain.encode(),
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256",
        include_headers=headers,
    )
    return sig + content


def sign_for_delivery(engine: Engine, settings: Settings, mail_from: str, content: bytes) -> (
    bytes
):
    """The message signed with its domain's key, if one is usable; else unchanged.

    Never raises: a signing problem is logged (without key material) and the message goes
    out unsigned rather than not at all.
    """
    if not settings.dkim.sign:
        return content
    try:
        domain = signing_domain(mail_from, content)
        if domain is None:
            return content
        found = _candidates(engine, domain)
        if found and _maintenance_due(engine, settings, domain):
            # Record what DNS says, switch to a newly published key, start a due rotation:
            # at most every `check_interval` seconds per domain, without any `dkim check`.
            try:
                maintain(engine, settings, domain)
            except Exception as e:  # noqa: BLE001 - signing goes on with what is known
                log.warning("DKIM maintenance of %s failed: %s", domain, e)
            found = _candidates(engine, domain)
        for c in found:
            if _usable(settings, c):
                private = _decrypt(settings, c.domain, c.selector, c.private_blob)
                return sign_with(content, c.domain, c.selector, c.algorithm, private)
    except Exception as e:  # noqa: BLE001 - unsigned beats undelivered
        log.warning("DKIM signing skipped: %s", type(e).__name__)
    return content
