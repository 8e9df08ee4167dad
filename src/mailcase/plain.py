"""Records as plain data: JSON-ready values and CSV text, for the CLI and the REST API alike."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

__all__ = ["csv_cell", "to_csv", "to_plain"]


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


# Spreadsheets run a cell that starts with one of these as a formula; exported text is often
# sender-chosen (subjects, addresses), so such a cell gets a leading apostrophe (OWASP "CSV
# injection"). Tab and CR are on OWASP's list too.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell: empty for None, true/false, a list space-separated, times as ISO 8601;
    text that a spreadsheet would run as a formula is prefixed with `'`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = " ".join(str(to_plain(v)) for v in value)
    else:
        text = value if isinstance(value, str) else str(to_plain(value))
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text (RFC 4180: CRLF line ends, quoting by the csv module) with a header row of
    `columns`, then one row per mapping; every cell through `csv_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(name)) for name in columns])
    return out.getvalue()
