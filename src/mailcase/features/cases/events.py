"""Values passed from Email-to-Case to its automation (auto-responses, loops, limits, notices).

The pipeline's case destination builds a `CaseEmailEvent` for every inbound message to a
routing address and calls the `CaseAutomation` the composition root gave it (in practice
`mailcase.features.cases.automation.service.Automation`):

- ``admit(conn, settings, event) -> Admission | None`` before a NEW case is created
  (`event.case_id` is None then): None or ``action == "create"`` lets it through;
  ``"discard"`` and ``"bounce"`` create nothing (the automation writes its own log entry or
  DSN), ``"requeue"`` leaves the message in the spool to be processed again later;
- ``on_case_email(conn, settings, event)`` after an inbound email is stored on a case
  (new or existing), in the same transaction;
- ``on_refused_sender(conn, settings, event, reason)`` when the routing address refused the
  sender ("accept email from" or "require authenticated sender"); the message is then dropped
  (logged, the raw message stays in the spool table).

All run inside the pipeline's write transaction: whatever they write commits with the case,
and an exception quarantines the message (nothing half-done).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailcase.authcheck import AuthResults
from mailcase.mime import InboundEmail

__all__ = ["Admission", "CaseCreated", "CaseEmailEvent", "RoutingInfo"]


@dataclass(frozen=True, slots=True)
class RoutingInfo:
    """The routing address row the message arrived through."""

    id: int
    address: str
    name: str
    origin: str
    priority: str
    owner: str | None
    queue: str | None
    accept_from: tuple[str, ...]
    task_status: str | None
    save_headers: bool
    require_tls: bool
    require_authenticated_sender: bool
    enabled: bool


@dataclass(frozen=True, slots=True)
class CaseEmailEvent:
    """One inbound email on (or about to open) a case."""

    queue_id: str
    message_pk: int
    routing: RoutingInfo
    email: InboundEmail
    mail_from: str  # envelope sender ("" for a null reverse-path)
    rcpt_to: tuple[str, ...]
    contact_email: str
    contact_name: str
    auth: AuthResults | None
    case_id: int | None = None  # None when `admit` is asked before a case exists
    case_number: str | None = None  # zero-padded, "00001027"
    case_subject: str = ""
    case_status: str = ""
    owner: str | None = None
    queue: str | None = None
    is_new_case: bool = False
    case_email_id: int | None = None
    thread_token: str | None = None
    sender_not_on_thread: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """What automation decided about creating a case; `reason` goes to the email log."""

    action: Literal["create", "discard", "bounce", "requeue"]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CaseCreated:
    """A new case, published in the transaction that created it (other features react to it,
    e.g. tasks: "create a task with status X"; Email-to-Case never imports them)."""

    case_id: int
    subject: str
    description: str
    priority: str
    owner: str | None
    queue: str | None
    task_status: str | None
