"""The application log (Python `logging` on stderr): one record starts one line, always.

Records often quote what came from outside: an exception raised while processing a received
message, a remote server's reply, a peer's domain. A CR or LF in it started a line of its own
that a reader (or a log shipper) could take for a record mailcase wrote, and an ESC could
drive the reader's terminal (DESIGN.md: nothing a client sends becomes a log field
unescaped). So the message's unprintable characters are escaped (`\\n`, `\\x1b`, `\\u2028`),
and a traceback, which is several lines by nature, has each of its lines after the first
indented: a line at column 0 is always the start of a record.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

__all__ = ["OneLineFormatter", "configure", "escape"]

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


def configure(level: str | int, fmt: str, stream: TextIO | None = None) -> None:
    """Log records at `level` and above to `stream` (stderr) in `fmt`, one line each; like
    `logging.basicConfig`, nothing changes if the root logger has handlers already."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
