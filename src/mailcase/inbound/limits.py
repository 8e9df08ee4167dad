"""Connection limits: total and per client IP (421 4.7.0 when over, RFC 5321 §3.8)."""

from __future__ import annotations

from collections import Counter

from mailcase.smtp.replies import Reply

__all__ = ["ConnectionTracker"]

TOO_MANY_TOTAL = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later")


class ConnectionTracker:
    """Counts open sessions; `admit` says why a new one must be refused, or None."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self.total = 0
        self.per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> tuple[str, Reply] | None:
        if self.total >= self.max_total:
            return "too_many_connections", TOO_MANY_TOTAL
        if self.per_ip[ip] >= self.max_per_ip:
            return "too_many_connections_per_ip", TOO_MANY_FROM_IP
        self.total += 1
        self.per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
