"""Several SMTP acceptor processes on one port: counted together, replaced when they die,
gone with their parent."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import smtplib
import time
from pathlib import Path

import httpx

from tests.support.platform import Platform, running_platform


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
            if ppid == pid and b"multiprocessing" in cmdline and b"spawn_main" in cmdline:
                out.append(int(entry.name))
    return out


def _accepted(p: Platform) -> float:
    with p.api() as api:  # /metrics needs the API token
        text = api.get("/metrics").text
    return sum(float(v) for v in re.findall(r'^mailcase_messages_accepted_total\{tls="\w+"\} (\S+)$', text, re.M))


def _send(p, n: int) -> None:
    for i in range(n):
        with smtplib.SMTP(*p.smtp, timeout=10) as s:
            s.sendmail("a@sender.test", ["multi@example.test"], f"Subject: {i}\r\n\r\nx\r\n".encode())


def test_three_acceptors_share_the_port_and_the_metrics_add_up(tmp_path: Path) -> None:
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__PROCESSES": "3"}) as p:
        p.cli("address", "add", "multi@example.test")
        assert p.proc is not None
        kids = _children(p.proc.pid)
        assert len(kids) == 3, kids  # the parent keeps the pipeline and the HTTP API
        _send(p, 30)
        deadline = time.monotonic() + 5  # children report every second
        while _accepted(p) != 30:
            assert time.monotonic() < deadline, _accepted(p)
            time.sleep(0.2)
        assert "3 acceptor processes" in p.log_text()


def test_a_dead_acceptor_is_replaced_and_a_dead_parent_takes_its_children(tmp_path: Path) -> None:
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__PROCESSES": "2"}) as p:
        p.cli("address", "add", "multi@example.test")
        assert p.proc is not None
        parent = p.proc.pid
        first = _children(parent)
        assert len(first) == 2, first
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            kids = _children(parent)
            if len(kids) == 2 and first[0] not in kids:
                break
            assert time.monotonic() < deadline, "acceptor not replaced"
            time.sleep(0.2)
        _send(p, 10)
        assert "exited unexpectedly" in p.log_text()
        p.kill()
        deadline = time.monotonic() + 10
        for kid in kids:
            while Path(f"/proc/{kid}").exists():
                stat = Path(f"/proc/{kid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    break
                assert time.monotonic() < deadline, "acceptor outlived its parent"
                time.sleep(0.1)


def test_acceptors_spool_files_reach_the_database_also_after_a_kill(tmp_path: Path) -> None:
    """SQLite: each acceptor commits to a spool file of its own. What they acknowledged is
    moved into the database while the server runs, and after a SIGKILL the next command (or
    start) moves what is left: a 250 is never a message the CLI cannot see."""
    with running_platform(tmp_path, env={"MAILCASE_INBOUND__PROCESSES": "2"}) as p:
        p.cli("address", "add", "multi@example.test")
        assert sorted(f.name for f in (p.data_dir / "spool").glob("acceptor-*.db")) == [
            "acceptor-1.db", "acceptor-2.db"]
        _send(p, 20)
        deadline = time.monotonic() + 10
        while len(json.loads(p.cli("messages", "list", "--json").stdout)) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert p.proc is not None
        os.kill(p.proc.pid, signal.SIGSTOP)  # the parent (the mover) stands still ...
        _send(p, 20)  # ... while the children accept and commit to their spool files
        p.kill()  # then it dies, and its children with it (PR_SET_PDEATHSIG)
        with httpx.Client() as c, contextlib.suppress(httpx.HTTPError):
            c.get(p.http_base + "/healthz", timeout=0.5)
            raise AssertionError("the server should be gone")
        listed = json.loads(p.cli("messages", "list", "--json", "--limit", "1000").stdout)
        assert len(listed) == 40 and len({m["queue_id"] for m in listed}) == 40
        log = json.loads(p.cli("log", "--json", "--limit", "1000").stdout)
        assert sum(1 for e in log if e["outcome"] == "accepted") == 40
