"""Bounces: VERP return paths, inbound DSNs, the suppression list, DSNs we send, compliance BCC.

How a bounce finds its message: every outbound message leaves with its own return path
`bounce+<queue id>.<mac>@<bounce domain>` (VERP). The MAC (HMAC-SHA256 with the key in
`verp_keys`) makes the address unforgeable, so the SMTP listener accepts exactly the bounce
addresses we made (see `mailcase.policy.recipients.AddressRules`) and refuses altered ones at
RCPT time. A DSN arriving there is parsed (`InboundEmail.delivery_report`), tied to the
outbound message by the queue id in the address (the returned Message-ID is the fallback) and
recorded: a permanent failure (status 5.x.x) puts the recipient on the suppression list, so
later mail to it is stored as "suppressed" and never sent, until `mailcase bounces clear`.
A temporary one (4.x.x, or a "delayed" report) is recorded only.

The hooks the delivery engine calls: `return_path_for` (MAIL FROM of an attempt) and
`on_permanent_failure` (a DSN to the sender, never to an empty return path and never about a
DSN). `enqueue_hook(settings)` makes the `EnqueueHook` that marks suppressed recipients and
adds the compliance BCC addresses; the composition root (`mailcase.platform.build_outbound`)
hands it to every process that enqueues (nothing is registered by importing this module).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from mailcase import maillog
from mailcase.config import Settings
from mailcase.outbound import queue as outbound_queue
from mailcase.outbound.dsn import DsnFailure, build_dsn
from mailcase.outbound.extras_models import bounce_events, bounced_addresses, verp_keys
from mailcase.outbound.models import outbound_contents, outbound_messages, outbound_recipients
from mailcase.policy.recipients import VERP_PREFIX, verp_address, verp_queue_id
from mailcase.storage import messages
from mailcase.storage.db import begin_write, make_engine
from mailcase.storage.models import utcnow
from mailcase.storage.spool import LogEntry

if TYPE_CHECKING:
    from mailcase.mime.model import DeliveryReport

__all__ = [
    "BounceDestination",
    "BounceInfo",
    "BounceRecord",
    "bounce_domain",
    "clear",
    "compliance_recipients",
    "count_suppressed",
    "enqueue_hook",
    "ensure_verp_key",
    "is_suppressed",
    "list_bounces",
    "list_events",
    "load_verp_key",
    "on_permanent_failure",
    "record_bounce",
    "return_path_for",
    "suppress",
    "suppressed_among",
]

log = logging.getLogger(__name__)

_VERP_KEY_ID = 1


# ---------------------------------------------------------------- the VERP key


def load_verp_key(target: Engine | Connection) -> bytes | None:
    """The key signing bounce addresses; None until one was made."""
    stmt = select(verp_keys.c.key).where(verp_keys.c.id == _VERP_KEY_ID)
    if isinstance(target, Engine):
        with target.connect() as conn:
            value = conn.execute(stmt).scalar()
    else:
        value = target.execute(stmt).scalar()
    return None if value is None else bytes(value)


def ensure_verp_key(conn: Connection) -> bytes:
    """The key, made now (in `conn`'s write transaction) if there is none yet."""
    key = load_verp_key(conn)
    if key is not None:
        return key
    values = {"id": _VERP_KEY_ID, "key": secrets.token_bytes(32), "created_at": utcnow()}
    stmt: Any = (
        pg_insert(verp_keys) if conn.dialect.name == "postgresql" else sqlite_insert(verp_keys)
    )
    conn.execute(stmt.values(**values).on_conflict_do_nothing())
    key = load_verp_key(conn)
    assert key is not None
    return key


_key_lock = threading.Lock()
_key_cache: dict[str, bytes] = {}


def _key_for(settings: Settings) -> bytes:
    """The VERP key of the settings' database (read once per process)."""
    url = settings.database_url
    with _key_lock:
        cached = _key_cache.get(url)
    if cached is not None:
        return cached
    engine = make_engine(url)
    try:
        key = load_verp_key(engine)
        if key is None:
            with begin_write(engine) as conn:
                key = ensure_verp_key(conn)
    finally:
        engine.dispose()
    with _key_lock:
        _key_cache[url] = key
    return key


def bounce_domain(settings: Settings) -> str:
    """Domain of the VERP return paths."""
    return (settings.dkim.bounce_domain or settings.server.hostname).strip().rstrip(".").lower()


def return_path_for(settings: Settings, queue_id: str, mail_from: str) -> str:
    """MAIL FROM for delivering `queue_id`: its VERP address, or `mail_from` unchanged for
    the null sender, when VERP is off, or if no key can be had (mail still goes out)."""
    if not mail_from or mail_from == "<>" or not settings.dkim.verp:
        return mail_from
    try:
        return verp_address(_key_for(settings), queue_id, bounce_domain(settings))
    except Exception as e:  # noqa: BLE001 - an unVERPed return path beats no delivery
        log.warning("no VERP return path for %s: %s", queue_id, e)
        return mail_from


# ---------------------------------------------------------------- suppression list


@dataclass(frozen=True, slots=True)
class BounceRecord:
    """A suppressed address as listed."""

    address: str
    status: str | None
    reason: str | None
    queue_id: str | None
    source: str
    bounces: int
    first_bounced_at: dt.datetime
    last_bounced_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """One recorded bounce (hard or soft)."""

    time: dt.datetime
    recipient: str
    kind: str
    status: str | None
    action: str | None
    outbound_queue_id: str | None
    message_id: str | None
    remote_mta: str | None
    diagnostic: str | None
    source: str


def _norm(address: str) -> str:
    return address.strip().strip("<>").lower()


def is_suppressed(conn: Connection, address: str) -> bool:
    """Is mail to `address` blocked because it hard-bounced (until `clear`)?"""
    row = conn.execute(
        select(bounced_addresses.c.id).where(bounced_addresses.c.address == _norm(address))
    ).first()
    return row is not None


def suppressed_among(conn: Connection, addresses: Sequence[str]) -> set[str]:
    """Which of `addresses` (lowercased) are suppressed: one query for a whole envelope."""
    wanted = sorted({_norm(a) for a in addresses})
    if not wanted:
        return set()
    rows = conn.execute(
        select(bounced_addresses.c.address).where(bounced_addresses.c.address.in_(wanted))
    )
    return {r[0] for r in rows}


def suppress(
    conn: Connection,
    address: str,
    *,
    status: str | None,
    reason: str | None,
    queue_id: str | None = None,
    source: str = "dsn",
) -> None:
    """Put `address` on the suppression list (or count one more bounce if it is on it)."""
    addr = _norm(address)
    now = utcnow()
    values = {
        "address": addr, "status": status, "reason": (reason or "")[:2000] or None,
        "queue_id": queue_id, "source": source[:16], "bounces": 1,
        "first_bounced_at": now, "last_bounced_at": now,
    }
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(bounced_addresses).values(**values)
    else:
        stmt = sqlite_insert(bounced_addresses).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[bounced_addresses.c.address],
        set_={
            "status": status, "reason": values["reason"], "queue_id": queue_id,
            "last_bounced_at": now, "bounces": bounced_addresses.c.bounces + 1,
        },
    )
    conn.execute(stmt)


def clear(engine: Engine, address: str) -> bool:
    """Take `address` off the suppression list; False if it was not on it."""
    with begin_write(engine) as conn:
        done = conn.execute(
            delete(bounced_addresses).where(bounced_addresses.c.address == _norm(address))
        )
    if done.rowcount:
        maillog.event("bounce", None, cleared=f"<{_norm(address)}>")
    return bool(done.rowcount)


def list_bounces(engine: Engine, *, limit: int = 1000) -> list[BounceRecord]:
    """The suppression list, most recent bounce first."""
    c = bounced_addresses.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.address, c.status, c.reason, c.queue_id, c.source, c.bounces,
                   c.first_bounced_at, c.last_bounced_at)
            .order_by(c.last_bounced_at.desc(), c.id.desc())
            .limit(limit)
        ).all()
    return [BounceRecord(**r._mapping) for r in rows]


def list_events(
    engine: Engine, *, recipient: str | None = None, limit: int = 1000
) -> list[BounceInfo]:
    """Recorded bounces (hard and soft), newest first."""
    c = bounce_events.c
    stmt = select(c.time, c.recipient, c.kind, c.status, c.action, c.outbound_queue_id,
                  c.message_id, c.remote_mta, c.diagnostic, c.source)
    if recipient is not None:
        stmt = stmt.where(c.recipient == _norm(recipient))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(c.id.desc()).limit(limit)).all()
    return [BounceInfo(**r._mapping) for r in rows]


def _kind(status: str | None, action: str | None) -> str | None:
    """hard / soft / None (not a failure at all: delivered, relayed, expanded)."""
    a = (action or "failed").lower()
    if a not in {"failed", "delayed"}:
        return None
    if a == "failed" and (status or "").startswith("5"):
        return "hard"
    return "soft"


def record_bounce(
    conn: Connection,
    *,
    source: str,
    recipient: str,
    status: str | None,
    action: str | None = "failed",
    outbound_queue_id: str | None = None,
    message_id: str | None = None,
    remote_mta: str | None = None,
    diagnostic: str | None = None,
    mail_from: str | None = None,
) -> str | None:
    """Record one bounce; suppress the address when it is hard. Returns the kind recorded
    (None when the report was no failure or `source` already recorded it)."""
    kind = _kind(status, action)
    if kind is None:
        return None
    addr = _norm(recipient)
    values = {
        "time": utcnow(), "source": source[:100], "recipient": addr[:320], "kind": kind,
        "status": (status or None) and status[:16], "action": (action or None) and action[:16],
        "outbound_queue_id": outbound_queue_id, "message_id": message_id,
        "remote_mta": remote_mta, "diagnostic": (diagnostic or "")[:2000] or None,
    }
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(bounce_events).values(**values)
    else:
        stmt = sqlite_insert(bounce_events).values(**values)
    inserted = conn.execute(
        stmt.on_conflict_do_nothing().returning(bounce_events.c.id)
    ).first()
    if inserted is None:
        return None  # the same report again (e.g. a message processed after a crash)
    if kind == "hard":
        suppress(conn, addr, status=status, reason=diagnostic, queue_id=outbound_queue_id,
                 source=source.partition(":")[0])
    messages.insert_log(
        conn,
        LogEntry(
            time=values["time"],  # type: ignore[arg-type]
            direction="outbound",
            queue_id=outbound_queue_id,
            client_ip=None,
            helo=None,
            mail_from=mail_from,
            rcpt_to=(addr,),
            tls_version=None,
            tls_cipher=None,
            requiretls=False,
            size=None,
            message_id=message_id,
            outcome="bounced" if kind == "hard" else "deferred",
            reply_code=None,
            reply_text=(diagnostic or None) and diagnostic[:2000],
            reason=f"{source}: status {status or '-'}"
            + (f" from {remote_mta}" if remote_mta else "")
            + ("; address suppressed" if kind == "hard" else "; soft bounce, recorded only"),
        ),
    )
    maillog.bounce(
        outbound_queue_id, recipient=addr, status=status, kind=kind, source=source,
        remote_mta=remote_mta,
    )
    return kind


# ---------------------------------------------------------------- compliance BCC, enqueue hook

def compliance_recipients(settings: Settings) -> list[str]:
    """Addresses that silently get a copy of all outbound mail."""
    return [a.strip() for a in settings.dkim.compliance_bcc if a.strip()]


def enqueue_hook(settings: Settings) -> outbound_queue.EnqueueHook:
    """The hook that adds the compliance BCC recipients of `settings` and marks suppressed ones
    (see module docstring).

    The compliance addresses themselves are never suppressed: the archive must not stop
    silently because it once refused a message."""

    def hook(conn: Connection, env: outbound_queue.Envelope) -> outbound_queue.Envelope:
        rcpts = list(env.rcpt_to)
        archive: set[str] = set()
        have = {r.lower() for r in rcpts}
        for extra in compliance_recipients(settings):
            archive.add(extra.lower())
            if extra.lower() not in have:
                rcpts.append(extra)
                have.add(extra.lower())
        gone = suppressed_among(conn, rcpts) - archive
        return replace(env, rcpt_to=tuple(rcpts), suppressed=frozenset(env.suppressed | gone))

    return hook


# ---------------------------------------------------------------- DSNs we send


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    mapping = getattr(obj, "_mapping", None)
    if mapping is not None and name in mapping:
        return mapping[name]
    return getattr(obj, name, default)


def _reply_parts(reply: Any) -> tuple[int | None, str | None, str | None]:
    """(code, enhanced status, text) of whatever reply value the engine passes."""
    if reply is None:
        return None, None, None
    if isinstance(reply, str):
        return None, None, reply
    code = _get(reply, "code")
    enhanced = _get(reply, "enhanced")
    text = _get(reply, "text") or _get(reply, "message")
    if text is None:
        text = str(reply)
    return (int(code) if isinstance(code, int) else None), enhanced, str(text)


def _status_of(code: int | None, enhanced: str | None, text: str | None) -> str:
    """RFC 3463 status of a failure: the remote's enhanced code when it gave one (a 4.x.x
    stays 4.x.x: a persistent transient failure that ran out of time), else from the code."""
    if enhanced and re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", enhanced):
        return enhanced
    if text:
        m = re.search(r"\b([45])\.(\d{1,3})\.(\d{1,3})\b", text)
        if m:
            return m.group(0)
    if code is not None and 400 <= code < 500:
        return "4.0.0"
    if code is None and text and "expired" in text.lower():
        return "4.4.7"  # RFC 3463: delivery time expired
    return "5.0.0"


def _is_dsn(content: bytes) -> bool:
    head = content.split(b"\r\n\r\n", 1)[0].lower()
    return b"multipart/report" in head and b"delivery-status" in head


def on_permanent_failure(
    conn: Connection, settings: Settings, message_row: Any, recipients: Sequence[Any], reply: Any
) -> None:
    """Tell the sender (RFC 3464 DSN, category "system", empty return path) and record the
    bounces. No DSN to the null sender, to one of our bounce addresses, or about a DSN.

    Never raises: it runs in the transaction that records the delivery results, which must
    commit whatever happens here (a savepoint undoes a half-done DSN; the failure is logged)."""
    try:
        with conn.begin_nested():
            _on_permanent_failure(conn, settings, message_row, recipients, reply)
    except Exception as e:  # noqa: BLE001 - the delivery results must still be recorded
        queue_id = str(_get(message_row, "queue_id", "") or "") or None
        log.warning("bounce handling of %s failed: %s: %s", queue_id, type(e).__name__, e)
        maillog.event("bounce", queue_id, dsn="failed", error=f"{type(e).__name__}: {e}")


def _on_permanent_failure(
    conn: Connection, settings: Settings, message_row: Any, recipients: Sequence[Any], reply: Any
) -> None:
    queue_id = str(_get(message_row, "queue_id", "") or "")
    mail_from = str(_get(message_row, "mail_from", "") or "").strip()
    message_pk = _get(message_row, "id")
    content = _get(message_row, "content")
    if content is None and message_pk is not None:
        content = conn.execute(
            select(outbound_contents.c.content).where(outbound_contents.c.message_pk == message_pk)
        ).scalar()
    content = bytes(content or b"")
    message_id = _get(message_row, "message_id")
    failures: list[DsnFailure] = []
    archive = {a.lower() for a in compliance_recipients(settings)}
    for r in recipients:
        address = r if isinstance(r, str) else str(_get(r, "address", "") or "")
        if not address:
            continue
        if address.lower() in archive:
            # The compliance copy failed: the operator must see it (email log, maillog), the
            # sender must not (a DSN would reveal the silent BCC), and it is not suppressed.
            maillog.event("bounce", queue_id or None, to=f"<{address}>", compliance="failed",
                          dsn="not sent")
            continue
        code, enhanced, text = _reply_parts(reply)
        if not isinstance(r, str):
            # The engine's per-recipient dicts (address, stage, code, reply), or table rows.
            for code_key, text_key in (("code", "reply"), ("last_reply_code", "last_reply")):
                if _get(r, text_key) is not None or _get(r, code_key) is not None:
                    rcode, rtext = _get(r, code_key), _get(r, text_key)
                    code = rcode if isinstance(rcode, int) else None
                    text, enhanced = (None if rtext is None else str(rtext)), None
                    break
        status = _status_of(code, enhanced, text)
        diagnostic = text if text is None or code is None or text.startswith(str(code)) else (
            f"{code} {text}"
        )
        failures.append(DsnFailure(recipient=address, status=status, diagnostic=diagnostic,
                                   remote_mta=_get(r, "remote_host") if not isinstance(r, str)
                                   else None, last_attempt=utcnow()))
        if code is not None and 500 <= code < 600:
            # The remote refused it permanently: a hard bounce of that address.
            record_bounce(conn, source=f"delivery:{queue_id}", recipient=address,
                          status=status, outbound_queue_id=queue_id or None,
                          message_id=message_id, diagnostic=diagnostic, mail_from=mail_from)
    if not failures:
        return
    null_sender = mail_from in ("", "<>")
    ours = mail_from.lower().startswith(VERP_PREFIX) or mail_from.lower().startswith(
        "mailer-daemon@"
    )
    if null_sender or ours or _is_dsn(content):
        maillog.event("bounce", queue_id or None, dsn="not sent",
                      reason="null sender" if null_sender else "message is itself a bounce")
        return
    try:
        with conn.begin_nested():  # a DSN that cannot be queued must not undo the bounces
            dsn = build_dsn(
                reporting_mta=settings.server.hostname,
                original_sender=mail_from,
                failures=failures,
                original=content,
                queue_id=queue_id or None,
                arrival_date=_get(message_row, "created_at"),
            )
            dsn_id = outbound_queue.enqueue(
                conn, mail_from="", rcpt_to=[mail_from], content=dsn, category="system",
                source=f"dsn:{queue_id}" if queue_id else "dsn",
                hooks=(enqueue_hook(settings),),
            )
    except outbound_queue.EnqueueError as e:
        maillog.event("bounce", queue_id or None, dsn="not sent", to=f"<{mail_from}>",
                      reason=str(e))
        return
    maillog.event("bounce", queue_id or None, dsn=dsn_id, to=f"<{mail_from}>")


# ---------------------------------------------------------------- inbound DSNs


def _find_outbound(conn: Connection, qid: str | None, message_id: str | None) -> Any:
    m = outbound_messages.c
    cols = (m.id, m.queue_id, m.mail_from, m.message_id)
    if qid:
        row = conn.execute(
            select(*cols).where(m.queue_id.in_([qid, qid.upper()]))
        ).first()
        if row is not None:
            return row
    if message_id:
        return conn.execute(
            select(*cols).where(m.message_id == message_id).order_by(m.id.desc()).limit(1)
        ).first()
    return None


def _report(raw: bytes) -> DeliveryReport | None:
    from mailcase.mime import parse_message  # heavy; only the pipeline needs it

    return parse_message(raw).delivery_report


class BounceDestination:
    """Pipeline destination for mail to our VERP bounce addresses (other addresses: no-op)."""

    name = "bounces"

    def __init__(self, settings: Settings | None = None) -> None:
        self._key: bytes | None = None
        self._prepared: dict[int, DeliveryReport | None] = {}

    def prepare(self, engine: Engine, batch: Sequence[messages.MessageSummary]) -> None:
        """Parse the batch's DSNs before the write transaction (SQLite: outside its lock)."""
        self._prepared = {}
        wanted = [m for m in batch if any(a.lower().startswith(VERP_PREFIX) for a in m.rcpt_to)]
        if not wanted:
            return
        with engine.connect() as conn:
            for m in wanted:
                self._prepared[m.id] = _report(messages.load_content(conn, m.id))

    def release(self) -> None:
        """Drop the parsed reports once the batch is done."""
        self._prepared = {}

    def _verp_key(self, conn: Connection) -> bytes | None:
        if self._key is None:
            self._key = load_verp_key(conn)
        return self._key

    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        if not address.lower().startswith(VERP_PREFIX):
            return
        key = self._verp_key(conn)
        qid = verp_queue_id(key, address) if key is not None else None
        if qid is None:
            return  # not one of ours (RCPT refuses those; an older key, say): nothing to do
        self._process(conn, message, qid)

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        for m in batch:
            for address in m.rcpt_to:
                self.deliver(conn, m, address)

    def _process(self, conn: Connection, message: messages.MessageSummary, qid: str) -> None:
        if message.id in self._prepared:
            report = self._prepared[message.id]
        else:
            report = _report(messages.load_content(conn, message.id))
        source = f"dsn:{message.queue_id}"
        if report is None or not report.recipients:
            maillog.event("bounce", message.queue_id, verp=qid, status="ignored",
                          reason="not a delivery status report")
            return
        original = _find_outbound(conn, qid, report.original_message_id)
        out_qid = original.queue_id if original is not None else None
        out_rcpts: dict[str, int] = {}
        if original is not None:
            out_rcpts = {
                str(a).lower(): int(pk)
                for pk, a in conn.execute(
                    select(outbound_recipients.c.id, outbound_recipients.c.address).where(
                        outbound_recipients.c.message_pk == original.id
                    )
                )
            }
        for rec in report.recipients:
            address = rec.final_recipient
            for candidate in (rec.original_recipient, rec.final_recipient):
                if candidate and candidate.lower() in out_rcpts:
                    address = candidate
                    break
            kind = record_bounce(
                conn,
                source=source,
                recipient=address,
                status=rec.status or None,
                action=rec.action or "failed",
                outbound_queue_id=out_qid,
                message_id=(original.message_id if original is not None else None)
                or report.original_message_id,
                remote_mta=rec.remote_mta or report.reporting_mta,
                diagnostic=rec.diagnostic_code,
                mail_from=original.mail_from if original is not None else None,
            )
            pk = out_rcpts.get(address.lower())
            if kind == "hard" and pk is not None:
                conn.execute(
                    update(outbound_recipients)
                    .where(outbound_recipients.c.id == pk,
                           outbound_recipients.c.state == "delivered")
                    .values(state="bounced", last_reply=(rec.diagnostic_code or rec.status),
                            updated_at=utcnow())
                )


def count_suppressed(engine: Engine) -> int:
    """How many addresses are suppressed (for metrics and `bounces list`)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(bounced_addresses)).scalar()
                   or 0)

