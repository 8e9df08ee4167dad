"""Tasks end to end: a real `mailcase serve`, one email over SMTP to a routing address with
--task-status, the task read back through the CLI and the REST API, its status changed."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

import httpx

from tests.support.platform import running_platform

WAIT = 20.0  # seconds a message may take from 250 to its task (bounded polling)


def test_routing_task_status_creates_one_task(tmp_path: Path) -> None:
    config = ("[pipeline]\npoll_interval = 0.2\n[cases]\nauthenticate = false\n"
              "[inbound]\nprocesses = 1\n")  # the tasks, not the acceptors
    with running_platform(tmp_path, config=config) as p:
        p.cli("routing", "add", "help@example.test", "--owner", "bob", "--priority", "High",
              "--task-status", "Not Started")
        raw = (
            b"From: Ann <ann@client.test>\r\nTo: help@example.test\r\nSubject: Laptop broken\r\n"
            b"Message-ID: <task-flow-1@client.test>\r\n\r\nThe screen is black.\r\n"
        )
        with smtplib.SMTP(*p.smtp, timeout=15) as s:
            s.ehlo("client.test")
            s.sendmail("ann@client.test", ["help@example.test"], raw)
        with p.api() as api:
            deadline = time.monotonic() + WAIT
            tasks: list[dict[str, object]] = []
            while time.monotonic() < deadline and not tasks:
                tasks = api.get("/api/v1/tasks").json()
                time.sleep(0.1)
            assert len(tasks) == 1, tasks
            task = tasks[0]
            assert (task["subject"], task["status"], task["priority"], task["owner"]) == (
                "Email: Laptop broken", "Not Started", "High", "bob")
            assert task["description"] == "The screen is black.\n"
            number = task["case_number"]
            assert isinstance(number, str) and len(number) == 8
            case = api.get(f"/api/v1/cases/{number}").json()
            assert [t["id"] for t in case["tasks"]] == [task["id"]]

            # CLI: filters and set-status.
            listed = json.loads(p.cli("tasks", "list", "--case", number, "--json").stdout)
            assert [t["id"] for t in listed] == [task["id"]]
            assert json.loads(p.cli("tasks", "list", "--status", "Completed", "--json").stdout) == []
            out = p.cli("tasks", "set-status", str(task["id"]), "Completed").stdout
            assert f"task {task['id']}: Completed" in out
            assert "Completed" in p.cli("tasks", "list").stdout
            missing = p.cli("tasks", "set-status", "999999", "Completed", check=False)
            assert missing.returncode != 0 and "no task 999999" in missing.stderr

            # API: PATCH, filters, errors, auth.
            patched = api.patch(f"/api/v1/tasks/{task['id']}", json={"status": "In Progress"})
            assert patched.status_code == 200 and patched.json()["status"] == "In Progress"
            assert len(api.get("/api/v1/tasks", params={"status": "In Progress", "case": number}).json()) == 1
            assert api.get("/api/v1/tasks", params={"status": "Not Started"}).json() == []
            assert api.patch(f"/api/v1/tasks/{task['id']}", json={"status": " "}).status_code == 422
            assert api.patch("/api/v1/tasks/999999", json={"status": "x"}).status_code == 404
            assert httpx.get(p.http_base + "/api/v1/tasks", timeout=10).status_code == 401
