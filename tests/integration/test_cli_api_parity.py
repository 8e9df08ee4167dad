"""Issue 12 item 14: the commands added so that the CLI can do what the API can, used the way
an operator would, against a running mailcase."""

from __future__ import annotations

import json
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.support.platform import Platform, running_platform


def _json(p: Platform, *args: str) -> Any:
    return json.loads(p.cli(*args, "--json").stdout)


def _wait_case(p: Platform) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        found = _json(p, "cases", "list")
        if found:
            return found[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "no case was made"
        time.sleep(0.3)


def test_routing_cases_contacts_tasks_relays_from_the_cli(tmp_path: Path) -> None:
    config = '[cases]\nauthenticate = false\n[inbound]\nprocesses = 1\n'
    with running_platform(tmp_path, config=config) as p:
        p.cli("routing", "add", "help@example.test", "--task-status", "Not Started")
        # routing set: changes only what is given.
        out = p.cli("routing", "set", "help@example.test", "--priority", "high",
                    "--owner", "bob", "--accept-from", "sender.test", "--require-tls").stdout
        assert "changed routing address help@example.test" in out
        r = _json(p, "routing", "show", "help@example.test")
        assert (r["priority"], r["owner"], r["accept_from"]) == ("High", "bob", ["sender.test"])
        assert r["require_tls"] is True and r["origin"] == "Email"
        p.cli("routing", "set", "help@example.test", "--accept-anyone", "--no-require-tls")
        r = _json(p, "routing", "show", "help@example.test")
        assert r["accept_from"] == [] and r["require_tls"] is False and r["owner"] == "bob"
        assert p.cli("routing", "set", "help@example.test", check=False).returncode == 2
        assert p.cli("routing", "set", "nobody@example.test", "--owner", "x",
                     check=False).returncode == 1
        # A case with an attachment.
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "ann@sender.test", "help@example.test", "Help"
        msg["Message-ID"] = "<c1@sender.test>"
        msg.set_content("please help")
        blob = bytes(range(256)) * 4
        msg.add_attachment(blob, maintype="application", subtype="octet-stream",
                           filename="data.bin")
        with smtplib.SMTP(*p.smtp, timeout=30) as s:
            s.send_message(msg)
        case = _wait_case(p)
        number = case["number"]
        shown = _json(p, "cases", "show", number)
        (att,) = shown["emails"][0]["attachments"]
        out_file = tmp_path / "att.bin"
        p.cli("cases", "attachment", number, str(att["id"]), "--output", str(out_file))
        assert out_file.read_bytes() == blob and out_file.stat().st_mode & 0o077 == 0
        # cases set / close.
        changed = _json(p, "cases", "set", number, "--status", "working", "--priority", "low",
                        "--owner", "carol")
        assert (changed["status"], changed["priority"], changed["owner"]) == (
            "Working", "Low", "carol")
        assert "Closed" in p.cli("cases", "close", number).stdout
        closed = _json(p, "cases", "show", number)["case"]
        assert closed["status"] == "Closed" and closed["closed_at"]
        assert p.cli("cases", "set", number, check=False).returncode == 2
        assert p.cli("cases", "close", "99999", check=False).returncode == 1
        # tasks show.
        (task,) = _json(p, "tasks", "list")
        assert _json(p, "tasks", "show", str(task["id"]))["status"] == "Not Started"
        assert "status:" in p.cli("tasks", "show", str(task["id"])).stdout
        # contacts.
        p.cli("contacts", "add", "Dan@Example.test", "--name", "Dan")
        assert "dan@example.test" in {c["email"] for c in _json(p, "contacts", "list")}
        assert p.cli("contacts", "add", "dan@example.test", check=False).returncode == 1
        # address show, relay show.
        assert _json(p, "address", "show", "help@example.test")["address"] == "help@example.test"
        p.cli("relay", "add", "smart", "--host", "relay.test", "--port", "2525")
        assert _json(p, "relay", "show", "smart")["host"] == "relay.test"
        assert p.cli("relay", "show", "nope", check=False).returncode == 1
        # routing remove: the receiving address goes too, the case stays.
        p.cli("routing", "remove", "help@example.test")
        assert _json(p, "routing", "list") == []
        assert "help@example.test" not in p.cli("address", "list").stdout
        assert _json(p, "cases", "show", number)["case"]["number"] == number
        assert p.cli("routing", "remove", "help@example.test", check=False).returncode == 1
