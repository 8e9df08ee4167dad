"""The application log (Python `logging` on stderr): one record starts one line, always.

Records often quote what came from outside: an exception raised while processing a received
message, a remote server's reply, a peer's domain. A CR or LF in it started a line of its own
that a reader (or a log shipper) could take for a record mailcase wrote, and an ESC could
drive the reader's terminal (DESIGN.md: nothing a client sends becomes a log field
unescaped). So the message's unprintable characters are escaped (`\\n`, `\\x1b`, `\\u2028`),
and a traceback, which is several lines by nature, has each of its lines after the first
indented: a line at column 0 is always the start of a record.

`JsonFormatter` (`--log-format json`, for log shippers) writes each record as one JSON object
on one line; `json.dumps` escapes every control character and, with `ensure_ascii`, U+2028
too, so the same guarantee holds without our escaping.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Literal, TextIO

__all__ = ["JsonFormatter", "OneLineFormatter", "configure", "escape"]

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")  # ASCII printable never needs a look-up


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return c if c.isprintable() else c.encode("unicode_escape").decode("ascii")


def escape(text: str) -> str:
    """`text` with every unprintable character written as a Python escape (`\\n`, `\\x1b`)."""
    return text if text.isprintable() else _UNPRINTABLE.sub(_escape_char, text)


class OneLineFormatter(logging.Formatter):
    """A `logging.Formatter` whose records cannot forge other records (module docstring)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not text.isprintable():  # a traceback or a stack: indented continuation lines
            text = "\n    ".join([escape(line) for line in text.split("\n")])
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record and line: time (UTC, ISO 8601), level, logger, message,
    and the traceback as `exception` when there is one; `fields` are added to every record
    (an acceptor process's index)."""

    def __init__(self, fields: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            **self.fields,
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=True)


def configure(
    level: str | int,
    fmt: str,
    stream: TextIO | None = None,
    *,
    log_format: Literal["text", "json"] = "text",
    fields: Mapping[str, object] | None = None,
) -> None:
    """Log records at `level` and above to `stream` (stderr) in `fmt` (or as JSON), one line
    each; like `logging.basicConfig`, nothing changes if the root logger has handlers already."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter(fields) if log_format == "json" else OneLineFormatter(fmt)
    )
    logging.basicConfig(level=level, handlers=[handler])
