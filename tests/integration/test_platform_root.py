"""The composition root: a step that fails unwinds every step started before it, and
`--roles` runs only the parts asked for. Real acceptor processes, sockets and SQLite.
"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import socket
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mailcase.config import Settings
from mailcase.platform import build_platform, parse_roles
from mailcase.serve import serve
from tests.support import forkserver
from tests.support.platform import free_port


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings.model_validate({
        "data_dir": str(tmp_path / "data"),
        "inbound": {"listen": f"127.0.0.1:{free_port()}", **extra.pop("inbound", {})},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        **extra,
    })


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}


def _can_bind(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


async def test_a_failing_later_step_stops_acceptors_and_tasks_started_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP listener fails to start after the pipeline, the delivery engine and two
    acceptor processes are up. Nothing may be left running: no child, no task, no socket.

    The port is "taken" by making uvicorn's serve fail as a lost bind race does (another
    program binding the port between the start-up check and uvicorn's bind cannot be timed
    reliably in a test); everything else is real."""

    async def port_taken(self: uvicorn.Server, sockets: Any = None) -> None:
        raise OSError(errno.EADDRINUSE, "address already in use")

    monkeypatch.setattr(uvicorn.Server, "serve", port_taken)
    settings = _settings(tmp_path, inbound={"processes": 2})
    before = asyncio.all_tasks()
    try:
        with pytest.raises(SystemExit, match="did not start"):
            await serve(settings)
        assert multiprocessing.active_children() == []
        left = {t.get_name() for t in asyncio.all_tasks() - before if not t.done()}
        assert left == set()
        assert _can_bind(settings.inbound.listen)  # the shared SMTP socket is closed too
    finally:
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(10)


async def test_roles_start_only_the_parts_asked_for(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with build_platform(settings, ("web", "delivery")) as p:
        assert p.roles == ("delivery", "web")
        assert p.pipeline is None and p.gateway is None and p.acceptors is None
        assert p.delivery is not None
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://{settings.http.listen}/healthz")
        assert r.status_code == 200
        assert _can_bind(settings.inbound.listen)  # no SMTP listener in this process
        names = {t.get_name() for t in p.tasks if not t.done()}
        assert names == {"delivery"}
    assert all(t.done() for t in p.tasks)


def test_roles_are_checked_with_a_clear_error() -> None:
    assert parse_roles("web, SMTP") == ("smtp", "web")
    with pytest.raises(ValueError, match="unknown role.*mailer.*choose from"):
        parse_roles("smtp,mailer")


def test_serve_refuses_an_unknown_role(tmp_path: Path) -> None:
    res = forkserver.run(["--data-dir", str(tmp_path), "serve", "--roles", "smtp,mailer"],
                         env=_env(), timeout=60)
    assert res.returncode == 2
    assert "--roles" in res.stderr and "unknown role(s) mailer" in res.stderr


def test_roles_in_config_show(tmp_path: Path) -> None:
    res = forkserver.run(["--data-dir", str(tmp_path), "config", "show"], env=_env(),
                         timeout=60)
    roles = tomllib.loads(res.stdout)["server"]["roles"]
    assert roles == ["smtp", "pipeline", "delivery", "web", "fetch"]

