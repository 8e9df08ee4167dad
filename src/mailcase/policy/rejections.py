"""Which rejections of one SMTP session are logged one by one, and a summary of the rest.

Why: a client probing for addresses got 10 000 550s in 3.3 s on one connection, and each was
an email-log row and a maillog line; a flood could write thousands of rows a second. The first
`individual` rejections of a session are logged as before (a sender's few mistakes stay fully
visible); the rest are counted per stage and reason, keeping a few recipients as samples, and
written as one entry per (stage, reason, reply) when the session ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RejectionSummary", "RejectionTally"]

_SAMPLES = 5  # recipients kept per summary: enough to see what was probed


@dataclass(slots=True)
class RejectionSummary:
    """Rejections of one kind that were not logged one by one."""

    stage: str
    reason: str
    reply_code: int
    reply_text: str
    count: int = 0
    samples: list[str] = field(default_factory=list)


class RejectionTally:
    """Per-session counter; `record` says whether to log a rejection individually."""

    __slots__ = ("_individual", "_logged", "_summaries")

    def __init__(self, individual: int) -> None:
        if individual < 0:
            raise ValueError("individual must not be negative")
        self._individual = individual
        self._logged = 0
        self._summaries: dict[tuple[str, str, int, str], RejectionSummary] = {}

    def record(
        self, stage: str, reason: str, reply_code: int, reply_text: str, rcpts: list[str]
    ) -> bool:
        """Count one rejection; True while it should still be logged on its own."""
        if self._logged < self._individual:
            self._logged += 1
            return True
        key = (stage, reason, reply_code, reply_text)
        summary = self._summaries.get(key)
        if summary is None:
            summary = self._summaries[key] = RejectionSummary(stage, reason, reply_code, reply_text)
        summary.count += 1
        room = _SAMPLES - len(summary.samples)
        if room > 0:
            summary.samples.extend(rcpts[:room])
        return False

    def summaries(self) -> list[RejectionSummary]:
        """What was counted but not logged, in order of first occurrence."""
        return list(self._summaries.values())
