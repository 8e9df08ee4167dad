"""Attacks against a running mailcase: each test reproduces one attack (bounded in count and
time, loopback only) and fails on the code before its fix, so every later change runs them.

The fixtures are the integration suite's: a real mailcase subprocess and real peers."""

from __future__ import annotations

from tests.integration.conftest import client_tls, platform, require_tool

__all__ = ["client_tls", "platform", "require_tool"]
