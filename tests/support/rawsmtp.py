"""Helpers for tests that speak SMTP byte by byte to a running mailcase (what no client
library sends: BDAT, smuggling endings, STARTTLS injection) and read back what it stored."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from tests.support.platform import Platform

__all__ = ["RawClient", "find_message", "log_entries", "stored_messages"]


def stored_messages(p: Platform) -> list[dict[str, Any]]:
    """Every stored inbound message (without content), through the CLI."""
    return json.loads(p.cli("messages", "list", "--json", "--limit", "100000").stdout)


def find_message(p: Platform, message_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The stored message with `message_id`, waiting up to `timeout` seconds for it."""
    deadline = time.monotonic() + timeout
    while True:
        for m in stored_messages(p):
            if m["message_id"] == message_id:
                return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} not stored")
        time.sleep(0.1)


def log_entries(p: Platform, **filters: str) -> list[dict[str, Any]]:
    """Email log entries through the CLI, filtered like `mailcase log --KEY VALUE`."""
    args = ["log", "--json", "--limit", "1000"]
    for k, v in filters.items():
        args += [f"--{k.replace('_', '-')}", v]
    return json.loads(p.cli(*args).stdout)


class RawClient:
    """A line-level SMTP client for sending exactly the bytes a test needs."""

    def __init__(self, p: Platform) -> None:
        self.sock = socket.create_connection(p.smtp, timeout=10)
        self.buf = b""

    def reply(self) -> str:
        """One full (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed: " + repr(lines))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] == b" ":
                return "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def no_more_replies(self, wait: float = 0.5) -> bool:
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return not self.buf
        finally:
            self.sock.settimeout(10)
        return not data and not self.buf

    def close(self) -> None:
        self.sock.close()
