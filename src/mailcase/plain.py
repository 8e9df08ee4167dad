"""Records as plain JSON-ready data, for the CLI's --json and the REST API alike."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, is_dataclass
from typing import Any

__all__ = ["to_plain"]


def to_plain(obj: Any) -> Any:
    """Dataclasses, dicts and sequences to dicts and lists; times as ISO 8601.

    Message content is left out (it has its own `raw` endpoint and `--raw` flag): listing
    messages must not ship megabytes.
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items() if k != "content"}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray):
        return f"<{len(obj)} bytes>"
    return obj
