"""Pure decisions of the mailbox agent: no sockets, no database, no clock of its own.

- Which UIDs to take (RFC 3501 §2.3.1.1): a folder's state is (UIDVALIDITY, last UID taken).
  A new UIDVALIDITY means the server renumbered the folder: every UID there is new to us. The
  messages already taken come again then; the cases' dedupe key (Message-ID + body hash) keeps
  them from making a second case.
- The queue id of a fetched message is derived from (source token, UIDVALIDITY, UID), so a
  message fetched again after a crash between the spool's commit and the bookkeeping gets the
  same queue id, which the spool already holds: it is not stored twice.
- Back-off: the wait before reconnecting doubles with each failure in a row, up to a cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AFTER_ACTIONS",
    "SECURITIES",
    "FolderState",
    "backoff_delay",
    "batches",
    "queue_id_for",
    "search_criteria",
    "start_from",
    "uids_to_take",
]

Security = Literal["tls", "starttls", "plaintext"]
After = Literal["seen", "move", "delete"]
SECURITIES: tuple[Security, ...] = ("tls", "starttls", "plaintext")
AFTER_ACTIONS: tuple[After, ...] = ("seen", "move", "delete")


@dataclass(frozen=True, slots=True)
class FolderState:
    """What we know of one folder from earlier rounds (None: never looked at)."""

    uidvalidity: int
    last_uid: int


def start_from(state: FolderState | None, uidvalidity: int) -> int:
    """The highest UID already taken in a folder whose UIDVALIDITY is now `uidvalidity`."""
    if state is None or state.uidvalidity != uidvalidity:
        return 0
    return state.last_uid


def search_criteria(after: str, last_uid: int) -> list[str]:
    """UID SEARCH criteria for messages not taken yet. With after=seen a message someone
    already read is left alone (it was taken, or a person dealt with it in their client)."""
    criteria = ["UID", f"{last_uid + 1}:*"]
    if after == "seen":
        criteria.append("UNSEEN")
    return criteria


def uids_to_take(found: Iterable[int], last_uid: int, limit: int) -> list[int]:
    """The UIDs above `last_uid`, lowest first, at most `limit`. RFC 3501 §6.4.8: `n:*`
    always matches the highest UID, also when it is below n, so it is filtered here."""
    return sorted(u for u in set(found) if u > last_uid)[:limit]


def batches(sizes: dict[int, int], count: int, max_bytes: int) -> list[list[int]]:
    """`sizes` (UID -> octets) in UID order cut into batches of at most `count` messages and
    `max_bytes` octets (a bigger message alone), so one round never holds a mailbox's worth
    of 35 MB messages in memory."""
    out: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in sorted(sizes):
        size = sizes[uid]
        if current and (len(current) >= count or total + size > max_bytes):
            out.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        out.append(current)
    return out


def queue_id_for(token: str, uidvalidity: int, uid: int) -> str:
    """16 hex digits, the same for the same message of the same source every time; "I" is
    not a hex digit, so these never meet an SMTP queue id."""
    digest = hashlib.sha256(f"{token}:{uidvalidity}:{uid}".encode()).hexdigest()
    return "I" + digest[:15].upper()


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1: `base`)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 30)))
