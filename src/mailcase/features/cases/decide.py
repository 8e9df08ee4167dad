"""The pure threading decision: does an inbound email open a case or join one, and how.

Inputs are what storage found (the case matched by Message-ID or by a valid thread token,
with who is on its thread) and the policy settings; the output is a `Decision`. Keeping it
pure makes every branch of the policy testable without a database.

Policies (issue 3):
- sender not on thread (neither the case's contact, a sender or recipient of its unflagged
  emails, our own address nor an internal user): ``attach`` | ``attach_flagged`` (default) |
  ``new_case``;
- reply to a closed case: ``attach`` | ``reopen`` (default) | ``new_linked_case``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ClosedPolicy",
    "Decision",
    "NotOnThreadPolicy",
    "ThreadCase",
    "decide",
    "is_internal",
    "normalize_subject",
]

NotOnThreadPolicy = Literal["attach", "attach_flagged", "new_case"]
ClosedPolicy = Literal["attach", "reopen", "new_linked_case"]
MatchedBy = Literal["message-id", "token"]


@dataclass(frozen=True, slots=True)
class ThreadCase:
    """A case an inbound email refers to, and the addresses on its thread (lower case)."""

    id: int
    status: str
    participants: frozenset[str]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the email.

    `action` "new_case": open a case (`parent_case_id` set for a linked one); "attach": store
    it on `case_id`, flagged when `sender_not_on_thread`, reopening the case when `reopen`.
    """

    action: Literal["new_case", "attach"]
    case_id: int | None = None
    parent_case_id: int | None = None
    sender_not_on_thread: bool = False
    reopen: bool = False
    matched_by: MatchedBy | None = None
    reason: str = ""


def is_internal(sender: str, internal_domains: Iterable[str]) -> bool:
    """True when the sender's domain is one of ours (internal users)."""
    domain = sender.rpartition("@")[2].lower()
    return bool(domain) and domain in {d.lower().strip() for d in internal_domains}


def decide(
    case: ThreadCase | None,
    *,
    matched_by: MatchedBy | None,
    sender: str,
    internal: bool,
    not_on_thread: NotOnThreadPolicy = "attach_flagged",
    closed: ClosedPolicy = "reopen",
) -> Decision:
    """The decision for an email from `sender` that matched `case` (or nothing)."""
    if case is None:
        return Decision("new_case", reason="no thread matched")
    on_thread = internal or sender.lower() in case.participants
    flagged = False
    if not on_thread:
        if not_on_thread == "new_case":
            return Decision(
                "new_case",
                matched_by=matched_by,
                reason=f"sender not on the thread of case id {case.id}: new case by policy",
            )
        flagged = not_on_thread == "attach_flagged"
    if case.status == "Closed":
        if closed == "new_linked_case":
            return Decision(
                "new_case",
                parent_case_id=case.id,
                sender_not_on_thread=flagged,
                matched_by=matched_by,
                reason="reply to a closed case: new linked case by policy",
            )
        return Decision(
            "attach",
            case_id=case.id,
            sender_not_on_thread=flagged,
            reopen=closed == "reopen",
            matched_by=matched_by,
            reason="reply to a closed case: " + ("reopened" if closed == "reopen" else "attached"),
        )
    return Decision(
        "attach",
        case_id=case.id,
        sender_not_on_thread=flagged,
        matched_by=matched_by,
        reason=f"matched by {matched_by}",
    )


_TAG_WORDS = ("re", "aw", "fw", "fwd", "wg", "sv", "vs", "antw", "tr", "rif", "ynt", "odp")


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward prefixes and bracketed tags (for display only:
    threading never depends on the subject)."""
    s = subject.strip()
    while True:
        before = s
        if s.startswith("["):
            end = s.find("]")
            if 0 < end < 40:
                s = s[end + 1 :].strip()
        head, colon, rest = s.partition(":")
        if colon and head.strip().lower().rstrip("0123456789[]() ") in _TAG_WORDS:
            s = rest.strip()
        if s == before:
            return s
