"""The pipeline destination of Email-to-Case: a message to a routing address becomes a case,
or an email on one.

For each message (whatever the number of routing aliases it was sent to, it is handled once,
through the first of them):

1. `prepare` (outside the write lock): parse once (`mime.parse_message`, within
   `pipeline.parse_time_limit`, else the safe path: see `mailcase.watchdog`; messages over
   1 MiB one at a time, as each takes several times its size in memory), authenticate
   (SPF/DKIM/DMARC/ARC through mailcase's resolver, our own Authentication-Results fields
   removed first, RFC 8601 §5; mail fetched from a mailbox takes its SPF and DMARC from the
   trusted mailbox server's headers instead, `authcheck.trusted`).
2. In the pipeline's write transaction: skip it if already stored (exactly-once) or if the
   same message was already stored through another alias or an earlier delivery (dedupe key:
   Message-ID + content hash); refuse senders the routing address does not accept ("accept
   email from", "require authenticated sender" — a temporary DNS failure defers the message,
   see `errors.DeferMessage`); thread it (In-Reply-To/References against stored
   Message-IDs, then a valid thread token in subject or body; forged tokens are logged and
   ignored); create or update the case, store the email, its Message-IDs and attachments,
   write the email-log entry, and call the automation hooks (see `events`).

What it calls outside Email-to-Case is passed in by the composition root
(`mailcase.platform.build_destinations`): a `CaseAutomation` (loops, limits, auto-responses)
and the listeners of `CaseCreated` (tasks), so that this module imports neither.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from mailcase import maillog
from mailcase.authcheck import (
    AuthResults,
    authenticate,
    authenticate_fetched,
    is_authenticated,
    remove_own_results,
)
from mailcase.config import Settings
from mailcase.dns import NoSuchRecord, Resolver
from mailcase.errors import DeferMessage
from mailcase.features.cases.decide import Decision, ThreadCase, decide, is_internal
from mailcase.features.cases.events import Admission, CaseCreated, CaseEmailEvent, RoutingInfo
from mailcase.features.cases.routing import routing_targets, sender_accepted
from mailcase.features.cases.store import cases as case_store
from mailcase.features.cases.store import contacts as contact_store
from mailcase.features.cases.store import emails as email_store
from mailcase.features.cases.store import routing as routing_store
from mailcase.features.cases.store import threads as thread_store
from mailcase.features.cases.threadtoken import find_case_ids, make_token, strip_tokens
from mailcase.mime import InboundEmail, header_block, parse_message
from mailcase.secrets import server_secret
from mailcase.storage import messages
from mailcase.watchdog import Watchdog

__all__ = ["CaseAutomation", "CaseCreatedListener", "CaseDestination", "Prepared", "dedupe_key"]

log = logging.getLogger(__name__)

_PREPARE_THREADS = 8
_BIG_MESSAGE = 1024 * 1024  # bytes above which a message is parsed alone, not beside others


class CaseAutomation(Protocol):
    """The automation Email-to-Case consults (see `events` for when and what it may do)."""

    def admit(
        self, conn: Connection, settings: Settings, event: CaseEmailEvent
    ) -> Admission | None: ...

    def on_refused_sender(
        self, conn: Connection, settings: Settings, event: CaseEmailEvent, reason: str
    ) -> Admission | None: ...

    def on_case_email(
        self, conn: Connection, settings: Settings, event: CaseEmailEvent
    ) -> None: ...


class CaseCreatedListener(Protocol):
    """Told about every new case, in the transaction that created it."""

    def __call__(self, conn: Connection, event: CaseCreated, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """What `prepare` worked out for one message, before the write transaction."""

    email: InboundEmail
    auth: AuthResults | None
    auth_error: str | None  # authentication itself failed (a bug or hostile input)
    dedupe_key: str


class _BatchResolver(Resolver):
    """mailcase's resolver, remembering answers (and permanent failures) while it lives.

    One is made per pipeline batch: messages of a batch often come from the same domains
    (the same SPF and DMARC records), and a batch takes well under a second, far less than
    any sane TTL. Temporary failures are never remembered: each message asks again.
    """

    def __init__(self, nameservers: Sequence[str] = (), *, timeout: float = 5.0) -> None:
        super().__init__(nameservers, timeout=timeout)
        self._memo: dict[tuple[str, str], Any] = {}
        self._memo_lock = threading.Lock()

    def _query_sync(self, name: str, rdtype: str) -> Any:
        key = (name.lower().rstrip("."), rdtype)
        with self._memo_lock:
            hit = self._memo.get(key)
        if isinstance(hit, NoSuchRecord):
            # a fresh exception per raise: threads share the memo, not tracebacks
            raise type(hit)(hit.name, hit.rdtype, hit.detail, authenticated=hit.authenticated)
        if hit is not None:
            return hit
        try:
            answer = super()._query_sync(name, rdtype)
        except NoSuchRecord as e:
            with self._memo_lock:
                self._memo[key] = e
            raise
        with self._memo_lock:
            self._memo[key] = answer
        return answer


def dedupe_key(raw: bytes, email: InboundEmail) -> str:
    """Message-ID + a hash of the content below the header block (our Received header and
    other trace fields differ between deliveries of the same message; the body does not)."""
    body = raw[len(header_block(raw)) :]
    h = hashlib.sha256()
    for part in (email.message_id or "", email.from_address, email.subject, email.header("Date")):
        h.update((part or "").encode("utf-8", "replace") + b"\0")
    h.update(hashlib.sha256(body).digest())
    return h.hexdigest()


def _temporary(auth: AuthResults) -> bool:
    return (
        auth.dmarc.result == "temperror"
        or auth.spf.result == "temperror"
        or any(d.result == "temperror" for d in auth.dkim)
    )


def _admission(result: object) -> Admission | None:
    """Automation's answer as our Admission (duck-typed: `action`, `reason`)."""
    if result is None:
        return None
    action = str(getattr(result, "action", "create") or "create").lower()
    reason = str(getattr(result, "reason", "") or "")
    if action == "discard":
        return Admission("discard", reason)
    if action == "bounce":
        return Admission("bounce", reason)
    if action == "requeue":
        return Admission("requeue", reason)
    return None


def _addresses(values: Sequence[Any]) -> list[dict[str, str]]:
    return [{"address": a.address, "name": a.name} for a in values]


def _sender(email: InboundEmail, m: messages.MessageSummary) -> str:
    """Who the case is from: the From address, else the envelope sender (lower-cased)."""
    return (email.from_address or m.mail_from).strip().lower()


class CaseDestination:
    """Turns messages to routing addresses into cases and case emails."""

    name = "cases"

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        secret: bytes | None = None,
        automation: CaseAutomation | None = None,
        on_case_created: Sequence[CaseCreatedListener] = (),
    ) -> None:
        self.settings = settings
        self.automation = automation
        self.on_case_created = tuple(on_case_created)
        self._fixed_resolver = resolver
        self.resolver = resolver or self._new_resolver()
        self._secret = secret
        self._prepared: dict[int, Prepared] = {}
        self._watchdog = Watchdog(settings.pipeline.parse_time_limit)
        # Per batch (deliver_many): what is already stored, read in one query each.
        self._stored_pks: set[int] | None = None
        self._dedupe: dict[str, int] | None = None
        self._contacts: dict[str, contact_store.ContactRecord] | None = None

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = server_secret(self.settings)
        return self._secret

    # -- preparation (no write lock held) -------------------------------------------------
    def _new_resolver(self) -> Resolver:
        dns = self.settings.dns
        return _BatchResolver(dns.nameservers, timeout=dns.timeout)

    def prepare(self, engine: Engine, batch: Sequence[messages.MessageSummary]) -> None:
        """Parse and authenticate the batch's messages to routing addresses."""
        self._prepared = {}
        with engine.connect() as conn:
            routing = routing_store.routing_map(conn)
            wanted = [m for m in batch if routing_targets(m.rcpt_to, routing)]
            contents = messages.load_contents(conn, [m.id for m in wanted])
        if wanted and self._fixed_resolver is None:
            self.resolver = self._new_resolver()  # answers shared within this batch only
        # A big message is prepared alone: parsing and authenticating one takes several times
        # its size in memory, so they go one at a time (issue 11).
        big = [m for m in wanted if m.size > _BIG_MESSAGE]
        small = [m for m in wanted if m.size <= _BIG_MESSAGE]
        for m in big:
            self._prepared[m.id] = self._prepare_one(m, contents.pop(m.id))
        if len(small) <= 1 or not self.settings.cases.authenticate:
            for m in small:
                self._prepared[m.id] = self._prepare_one(m, contents.pop(m.id))
            return
        # Authentication mostly waits on DNS: overlap those waits (parsing still takes turns
        # on the GIL, so a few threads are enough).
        workers = min(_PREPARE_THREADS, len(small))
        with ThreadPoolExecutor(workers, thread_name_prefix="cases-prepare") as pool:
            done = pool.map(lambda m: self._prepare_one(m, contents[m.id]), small)
            for m, prepared in zip(small, done, strict=True):
                self._prepared[m.id] = prepared

    def release(self) -> None:
        """Drop what `prepare` kept (parsed bodies and attachments) once the batch is done."""
        self._prepared = {}

    def _parse(self, m: messages.MessageSummary, raw: bytes) -> InboundEmail:
        """Parse within the time limit; a message past it takes the safe path (issue 11)."""
        limits = self.settings.pipeline
        email = self._watchdog.run(
            lambda: parse_message(
                raw, max_html_input=limits.html_max_chars, max_html_depth=limits.html_max_depth
            ),
            name="cases-parse",
        )
        if email is not None:
            return email
        maillog.event(
            "cases", m.queue_id, action="slow-path",
            detail=f"parsing took over {limits.parse_time_limit:g} s (or too many did); "
            "text only, HTML kept as body.html",
        )
        return parse_message(raw, safe=True)

    def _prepare_one(self, m: messages.MessageSummary, raw: bytes) -> Prepared:
        authserv = self.settings.server.hostname
        cleaned = remove_own_results(raw, authserv)
        email = self._parse(m, cleaned)
        auth: AuthResults | None = None
        error: str | None = None
        if self.settings.cases.authenticate:
            try:
                if m.trusted_authserv_ids is not None:
                    # Fetched from a mailbox (issue 19): the verdicts come from the trusted
                    # mailbox server's headers; the IMAP connection's SPF means nothing.
                    auth = authenticate_fetched(
                        raw,
                        trusted=m.trusted_authserv_ids,
                        resolver=self.resolver,
                        authserv_id=authserv,
                    )
                else:
                    auth = authenticate(
                        raw,
                        client_ip=m.client_ip,
                        helo=m.helo,
                        mail_from=m.mail_from,
                        resolver=self.resolver,
                        authserv_id=authserv,
                    )
            except Exception as e:  # noqa: BLE001 - verdicts are values; a crash is a verdict too
                log.warning("authentication of %s failed: %s", m.queue_id, e)
                error = f"{type(e).__name__}: {e}"
        return Prepared(email, auth, error, dedupe_key(raw, email))

    def _get_prepared(self, conn: Connection, m: messages.MessageSummary) -> Prepared:
        p = self._prepared.get(m.id)
        if p is None:  # not prepared (the one-by-one retry claimed another batch)
            p = self._prepare_one(m, messages.load_content(conn, m.id))
            self._prepared[m.id] = p
        return p

    # -- Destination -------------------------------------------------------------------
    def deliver(self, conn: Connection, message: messages.MessageSummary, address: str) -> None:
        routing = routing_store.routing_map(conn)
        targets = routing_targets(message.rcpt_to, routing)
        if not targets or targets[0].address != address.strip().lower():
            return  # not a routing address, or the message goes through its first alias
        self._handle(conn, message, targets[0], routing)

    def deliver_many(self, conn: Connection, batch: Sequence[messages.MessageSummary]) -> None:
        routing = routing_store.routing_map(conn)
        work = [(m, t[0]) for m in batch if (t := routing_targets(m.rcpt_to, routing))]
        if not work:
            return
        self._stored_pks = email_store.stored_message_pks(conn, [m.id for m, _ in work])
        prepared = [self._get_prepared(conn, m) for m, _ in work]
        self._dedupe = email_store.dedupe_numbers(conn, [p.dedupe_key for p in prepared])
        # Contacts are made by people (API, CLI), never by this loop: one look-up per batch.
        self._contacts = contact_store.find_contacts(
            conn, [_sender(p.email, m) for p, (m, _) in zip(prepared, work, strict=True)]
        )
        try:
            for m, target in work:
                self._handle(conn, m, target, routing)
        finally:
            self._stored_pks = self._dedupe = self._contacts = None

    # -- the work ----------------------------------------------------------------------
    def _log(
        self,
        conn: Connection,
        m: messages.MessageSummary,
        outcome: str,
        reason: str,
        *,
        action: str,
        case: str | None,
        routing: str,
    ) -> None:
        messages.insert_log(conn, messages.log_entry(m, outcome, reason))
        maillog.case_event(m.queue_id, action=action, case=case, routing=routing, detail=reason)

    def _event(
        self,
        m: messages.MessageSummary,
        r: RoutingInfo,
        p: Prepared,
        contact_email: str,
        contact_name: str,
    ) -> CaseEmailEvent:
        return CaseEmailEvent(
            queue_id=m.queue_id,
            message_pk=m.id,
            routing=r,
            email=p.email,
            mail_from=m.mail_from,
            rcpt_to=tuple(m.rcpt_to),
            contact_email=contact_email,
            contact_name=contact_name,
            auth=p.auth,
            owner=r.owner,
            queue=r.queue,
        )

    def _refuse(
        self,
        conn: Connection,
        m: messages.MessageSummary,
        r: RoutingInfo,
        event: CaseEmailEvent,
        reason: str,
    ) -> None:
        """A sender this routing address does not take: automation's unauthorized-sender
        action when it is there (it logs), else discard with an email-log entry."""
        if self.automation is not None:
            result = _admission(
                self.automation.on_refused_sender(conn, self.settings, event, reason)
            )
            if result is not None and result.action == "requeue":
                raise DeferMessage(result.reason or reason, delay=self._requeue_delay())
            action = result.action if result is not None else "discard"
            maillog.case_event(
                m.queue_id, action=f"refused-{action}", routing=r.address, detail=reason
            )
            return
        self._log(
            conn, m, "discarded", f"{reason} (routing address {r.address})",
            action="refused", case=None, routing=r.address,
        )

    def _requeue_delay(self) -> float | None:
        value = getattr(self.settings.automation, "requeue_delay", None)
        return float(value) if isinstance(value, int | float) else None

    def _thread(
        self, conn: Connection, email: InboundEmail, own: Sequence[str]
    ) -> tuple[ThreadCase | None, str | None, list[str]]:
        """The case this email refers to, how it was found, and refused (forged) tokens."""
        ids: list[str] = []
        if email.in_reply_to:
            ids.append(email.in_reply_to)
        ids.extend(reversed(email.references))  # the nearest ancestor first
        report = email.delivery_report
        if report is not None and report.original_message_id:
            ids.append(report.original_message_id)  # a DSN about one of our case emails
        if ids:
            found = thread_store.case_ids_for_message_ids(conn, ids)
            for mid in ids:
                if mid in found:
                    case = thread_store.thread_case(conn, found[mid], own)
                    if case is not None:
                        return case, "message-id", []
        refused: list[str] = []
        for text in (email.subject, email.text_body):
            valid, bad = find_case_ids(self.secret, text)
            refused.extend(b for b in bad if b not in refused)
            for case_id in valid:
                case = thread_store.thread_case(conn, case_id, own)
                if case is not None:
                    return case, "token", refused
        return None, None, refused

    def _handle(
        self,
        conn: Connection,
        m: messages.MessageSummary,
        r: RoutingInfo,
        routing: dict[str, RoutingInfo],
    ) -> None:
        if self._stored_pks is not None:
            if m.id in self._stored_pks:
                return  # exactly-once: already on a case
        elif email_store.stored_for_message(conn, m.id):
            return
        p = self._get_prepared(conn, m)
        email = p.email
        if self._dedupe is not None:
            dup_number = self._dedupe.get(p.dedupe_key)
        else:
            found = email_store.existing_by_dedupe(conn, p.dedupe_key)
            dup_number = None if found is None else found[1]
        if dup_number is not None:
            number = case_store.format_number(dup_number)
            self._log(
                conn, m, "processed",
                f"duplicate of a message already on case {number}: not stored again",
                action="duplicate", case=number, routing=r.address,
            )
            return
        sender = _sender(email, m)
        if not sender:
            contact = None
        elif self._contacts is not None:
            contact = self._contacts.get(sender)
        else:
            contact = contact_store.find_contact(conn, sender)
        contact_email = contact.email if contact else sender
        contact_name = contact.name if contact else email.from_name
        event = self._event(m, r, p, contact_email, contact_name)

        # Who may write to this routing address.
        if not sender_accepted(r.accept_from, sender):
            self._refuse(conn, m, r, event, f"sender {sender or '<>'} not in accept-from list")
            return
        if r.require_authenticated_sender:
            if p.auth is None or not is_authenticated(p.auth):
                if p.auth is not None and _temporary(p.auth):
                    raise DeferMessage(
                        "sender authentication hit a temporary DNS failure: "
                        + p.auth.header(fold=False)
                    )
                why = p.auth.header(fold=False) if p.auth else (p.auth_error or "not checked")
                self._refuse(conn, m, r, event, f"sender not authenticated ({why})")
                return

        own = list(routing)
        case, matched_by, refused = self._thread(conn, email, own)
        if refused:
            maillog.case_event(
                m.queue_id, action="forged-token", routing=r.address,
                detail="ignored thread token(s) with a bad signature: " + " ".join(refused),
            )
        decision = decide(
            case,
            matched_by=matched_by,  # type: ignore[arg-type]
            sender=sender,
            internal=sender in routing or is_internal(sender, self.settings.cases.internal_domains),
            not_on_thread=self.settings.cases.sender_not_on_thread,
            closed=self.settings.cases.closed_case_reply,
        )
        note = f"; ignored forged token(s): {' '.join(refused)}" if refused else ""
        if decision.action == "new_case":
            admission = self._admit(conn, event)
            if admission is not None and admission.action != "create":
                if admission.action == "requeue":
                    raise DeferMessage(
                        admission.reason or "automation asked to requeue",
                        delay=self._requeue_delay(),
                    )
                # automation wrote the email-log entry (and queued a DSN for "bounce")
                maillog.case_event(
                    m.queue_id, action=admission.action, routing=r.address,
                    detail=admission.reason or "refused by automation",
                )
                return
        self._store(conn, m, r, p, decision, contact, event, note)

    def _admit(self, conn: Connection, event: CaseEmailEvent) -> Admission | None:
        if self.automation is None:
            return None
        return _admission(self.automation.admit(conn, self.settings, event))

    def _store(
        self,
        conn: Connection,
        m: messages.MessageSummary,
        r: RoutingInfo,
        p: Prepared,
        decision: Decision,
        contact: contact_store.ContactRecord | None,
        event: CaseEmailEvent,
        note: str,
    ) -> None:
        email = p.email
        is_new = decision.action == "new_case"
        if is_new:
            case_id, number_i = case_store.create_case(
                conn,
                subject=strip_tokens(email.subject) or "(no subject)",
                description=email.text_body,
                priority=r.priority,
                origin=r.origin,
                contact_id=contact.id if contact else None,
                supplied_name=email.from_name,
                supplied_email=email.from_address or m.mail_from,
                owner=r.owner,
                queue=r.queue,
                routing_address_id=r.id,
                parent_case_id=decision.parent_case_id,
            )
            created = CaseCreated(
                case_id=case_id,
                subject=strip_tokens(email.subject) or "(no subject)",
                description=email.text_body,
                priority=r.priority,
                owner=r.owner,
                queue=r.queue,
                task_status=r.task_status,
            )
            for listener in self.on_case_created:  # same transaction as the case
                listener(conn, created)
        else:
            assert decision.case_id is not None
            case_id = decision.case_id
            if decision.reopen:
                case_store.set_status(conn, case_id, "Working")
            number_i = 0
        auth = p.auth
        headers = [[k, v] for k, v in email.headers] if r.save_headers else None
        email_id = email_store.add_email(
            conn,
            case_id,
            touch=not is_new and not decision.reopen,
            direction="inbound",
            from_address=email.from_address or m.mail_from,
            from_name=email.from_name,
            to_addresses=_addresses(email.to),
            cc_addresses=_addresses(email.cc),
            subject=email.subject,
            text_body=email.text_body,
            html_body=email.html_body,
            headers=headers,
            message_id=email.message_id,
            in_reply_to=email.in_reply_to,
            reference_ids=list(email.references),
            inbound_message_pk=m.id,
            dedupe_key=p.dedupe_key,
            routing_address=r.address,
            mail_from=m.mail_from,
            client_ip=m.client_ip,
            helo=m.helo,
            tls_version=m.tls_version,
            tls_cipher=m.tls_cipher,
            requiretls=m.requiretls,
            auth=auth.as_dict() if auth else None,
            authentication_results=auth.header(fold=False) if auth else None,
            authenticated=is_authenticated(auth) if auth else None,
            sender_not_on_thread=decision.sender_not_on_thread,
            text_truncated=email.text_truncated,
            html_truncated=email.html_truncated,
            headers_truncated=email.headers_truncated,
        )
        if email.message_id:
            thread_store.index_message_ids(conn, case_id, email_id, [email.message_id])
        email_store.store_attachments(conn, email_id, email.attachments)
        if is_new:
            subject, status = strip_tokens(email.subject) or "(no subject)", "New"
            owner, queue = r.owner, r.queue
        else:
            number_i, subject, status, owner, queue = case_store.case_brief(conn, case_id)
        number_s = case_store.format_number(number_i)
        if self._stored_pks is not None:
            self._stored_pks.add(m.id)
        if self._dedupe is not None:
            self._dedupe[p.dedupe_key] = number_i
        if is_new:
            parent = "" if decision.parent_case_id is None else " (linked to a closed case)"
            text = f"case {number_s} created{parent}"
            action = "created"
        else:
            flag = ", sender not on thread" if decision.sender_not_on_thread else ""
            again = ", case reopened" if decision.reopen else ""
            text = f"attached to case {number_s} ({decision.matched_by}{flag}{again})"
            action = "attached"
        self._log(
            conn, m, "processed", text + note, action=action, case=number_s, routing=r.address
        )
        if self.automation is not None:
            self.automation.on_case_email(
                conn,
                self.settings,
                replace(
                    event,
                    case_id=case_id,
                    case_number=number_s,
                    case_subject=subject,
                    case_status=status,
                    owner=owner,
                    queue=queue,
                    is_new_case=is_new,
                    case_email_id=email_id,
                    thread_token=make_token(self.secret, case_id),
                    sender_not_on_thread=decision.sender_not_on_thread,
                ),
            )
