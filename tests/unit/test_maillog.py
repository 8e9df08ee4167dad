"""maillog: one line per event, written whole, buffered briefly, safe against injection."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailcase import maillog


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mail.log"
    maillog.configure(str(path))
    try:
        yield path
    finally:
        maillog.configure("none")


def test_lines_reach_the_file_within_the_flush_interval(logfile: Path) -> None:
    maillog.accepted("Q1", client_ip="192.0.2.1", helo="h", mail_from="a@x", rcpt_to=["b@y"],
                     size=10, tls="plaintext", message_id="<m@x>")
    deadline = time.monotonic() + 5
    while "Q1" not in logfile.read_text():
        assert time.monotonic() < deadline, "not written within 5 s"
        time.sleep(0.05)
    (line,) = logfile.read_text().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z mailcase/smtpd: Q1: ", line), line
    assert "from=<a@x>" in line and "status=queued" in line


def test_peer_text_cannot_start_a_new_line(logfile: Path) -> None:
    maillog.event("smtpd", None, helo="evil\r\nQ2: status=sent\x00")
    maillog.flush()
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1 and "NOQUEUE" in lines[0] and "\\r\\nQ2" in lines[0]


def test_pending_lines_are_written_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.log"
    code = (
        "from mailcase import maillog\n"
        f"maillog.configure({str(path)!r})\n"
        "for i in range(3): maillog.event('smtpd', f'Q{i}', n=i)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert [ln.split(": ")[1] for ln in path.read_text().splitlines()] == ["Q0", "Q1", "Q2"]


def test_a_forked_child_does_not_write_its_parents_pending_lines(logfile: Path) -> None:
    maillog.event("smtpd", "PARENT", n=1)  # pending, not yet flushed
    pid = os.fork()
    if pid == 0:  # the child writes only its own line, then exits the usual way for a fork
        maillog.event("smtpd", "CHILD", n=2)
        maillog.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    maillog.flush()
    text = logfile.read_text()
    assert text.count("PARENT") == 1 and text.count("CHILD") == 1
