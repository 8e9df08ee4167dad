"""Connection limits: total and per client IP (421 4.7.0 when over, RFC 5321 §3.8).

With several acceptor processes the limits must hold for all of them together, so the counts
live in shared memory: one row per process, one column per bucket of client addresses (the
IP hashed into `BUCKETS`; two addresses in one bucket count together, which can only make the
limit stricter, and is rare with 4096 buckets) plus a column for the total. A process's row
belongs to it alone; when a process dies its row is cleared before a replacement starts, so
the connections it held are not counted for ever.

Each process writes only its own row (from its one event-loop thread), so the counts are read
and written without a lock: the lock cost more than the rest of the connection bookkeeping, and
a row read while its owner changes it is at worst one connection stale, which can let a limit
be passed by one connection per other process at the same instant, never more.
"""

from __future__ import annotations

import zlib
from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Protocol

from mailcase.smtp.replies import SERVICE_NOT_AVAILABLE_CONNECTIONS, TOO_MANY_FROM_IP, Reply

__all__ = ["BUCKETS", "ConnectionTracker", "SharedCounts"]


BUCKETS = 4096
_ROW = BUCKETS + 1  # the last column is the process's total


class _Counts(Protocol):
    """What the tracker needs of its table: a list in one process, a shared ctypes array else."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


class SharedCounts:
    """The shared table: `rows` processes × (`BUCKETS` + 1) counters, one lock."""

    def __init__(self, array: SynchronizedArray[int], rows: int) -> None:
        self.array, self.rows = array, rows

    @classmethod
    def create(cls, ctx: BaseContext, rows: int) -> SharedCounts:
        """`ctx`: a multiprocessing context; the array is passed to children as it is."""
        return cls(ctx.Array("i", rows * _ROW, lock=True), rows)

    def clear_row(self, row: int) -> None:
        with self.array.get_lock():
            base = row * _ROW
            self.array[base : base + _ROW] = [0] * _ROW


def _bucket(ip: str) -> int:
    return zlib.crc32(ip.encode()) % BUCKETS


class ConnectionTracker:
    """Counts open sessions; `admit` says why a new one must be refused, or None."""

    def __init__(
        self, max_total: int, max_per_ip: int, shared: SharedCounts | None = None, row: int = 0
    ) -> None:
        self.max_total, self.max_per_ip = max_total, max_per_ip
        self._rows = shared.rows if shared is not None else 1
        self._base = row * _ROW if shared is not None else 0
        self._data: _Counts = (
            shared.array.get_obj() if shared is not None else [0] * _ROW
        )

    def _sum(self, column: int) -> int:
        data = self._data
        return sum(data[r * _ROW + column] for r in range(self._rows))

    def admit(self, ip: str) -> tuple[str, Reply] | None:
        bucket = _bucket(ip)
        if self._sum(BUCKETS) >= self.max_total:
            return "too_many_connections", SERVICE_NOT_AVAILABLE_CONNECTIONS
        if self._sum(bucket) >= self.max_per_ip:
            return "too_many_connections_per_ip", TOO_MANY_FROM_IP
        self._data[self._base + BUCKETS] += 1
        self._data[self._base + bucket] += 1
        return None

    def release(self, ip: str) -> None:
        bucket = _bucket(ip)
        self._data[self._base + BUCKETS] -= 1
        self._data[self._base + bucket] -= 1
