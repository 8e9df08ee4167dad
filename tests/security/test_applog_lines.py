"""Text from outside cannot forge records in the application log (Python logging, stderr).

Records quote outside text: the pipeline logs `quarantined <id>: <exception>` for a message it
could not process, where the exception may quote the message; delivery logs remote replies.
With a plain `logging.Formatter` a CR/LF in that text started a line that read as a record of
its own, and an ESC reached the reader's terminal.
"""

from __future__ import annotations

import io
import json
import logging
import re

from mailcase import applog

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
FORGED = "bad header\r\n2026-12-04 10:00:00,000 ERROR mailcase: admin password reset\x1b[2J\u2028x"


def _logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(applog.OneLineFormatter(FMT))
    logger = logging.getLogger(f"mailcase.test.applog.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_message_with_line_breaks_stays_one_record() -> None:
    out = io.StringIO()
    _logger(out).warning("quarantined %s: %s", "3F2A9C0B1D7E0001", FORGED)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].isprintable(), lines
    assert "bad header\\r\\n2026-12-04" in lines[0] and "\\x1b[2J\\u2028x" in lines[0]


def test_a_traceback_cannot_start_a_record() -> None:
    out = io.StringIO()
    try:
        raise ValueError(FORGED)
    except ValueError:
        _logger(out).exception("processing %s failed", "3F2A9C0B1D7E0002")
    lines = out.getvalue().splitlines()
    assert len(lines) > 2  # the traceback is still there, for people to read
    assert RECORD_START.match(lines[0])
    assert all(not RECORD_START.match(ln) and ln.startswith("    ") for ln in lines[1:]), lines


def test_the_servers_log_setup_uses_it() -> None:
    """`mailcase serve` and its acceptors configure logging through `applog.configure`."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    out = io.StringIO()
    try:
        applog.configure("INFO", FMT, out)
        logging.getLogger("mailcase.test.applog.root").warning("x %s", "a\nb")
    finally:
        root.handlers[:] = saved
    assert out.getvalue().count("\n") == 1 and "a\\nb" in out.getvalue()


def _json_logger(stream: io.StringIO) -> logging.Logger:
    logger = _logger(stream)
    logger.handlers[0].setFormatter(applog.JsonFormatter({"acceptor": 2}))
    return logger


def test_json_records_are_one_object_per_line_whatever_the_text() -> None:
    """Issue 12 item 16: `--log-format json` keeps the one-line guarantee."""
    out = io.StringIO()
    logger = _json_logger(out)
    logger.warning("quarantined %s: %s", "3F2A9C0B1D7E0001", FORGED)
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("processing %s failed", "3F2A9C0B1D7E0002")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(line.isprintable() and line.isascii() for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == f"quarantined 3F2A9C0B1D7E0001: {FORGED}"  # exact, decoded
    assert first["level"] == "WARNING" and first["acceptor"] == 2 and first["time"].endswith(
        "+00:00")
    assert second["message"] == "processing 3F2A9C0B1D7E0002 failed"
    assert "Traceback" in second["exception"] and FORGED in second["exception"]


def test_the_json_setup_is_what_configure_installs() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = []
    out = io.StringIO()
    try:
        applog.configure("INFO", FMT, out, log_format="json")
        logging.getLogger("mailcase.test.applog.json").info("x %s", "a\nb")
    finally:
        root.handlers[:] = saved
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == "x a\nb"
