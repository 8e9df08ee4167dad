"""Issue 12 item 14: the CLI can do what the REST API can.

Every API operation is declared here with the CLI command that does the same; a new route
without a CLI counterpart (or a mapping to a command that does not exist) fails this test.
"""

from __future__ import annotations

import click
from sqlalchemy import create_engine

from mailcase.cli import cli
from mailcase.metrics import Metrics
from mailcase.web.app import create_app

API_TO_CLI = {
    "GET /api/v1/addresses": "address list",
    "POST /api/v1/addresses": "address add",
    "GET /api/v1/addresses/{address}": "address show",
    "PATCH /api/v1/addresses/{address}": "address set",
    "DELETE /api/v1/addresses/{address}": "address remove",
    "GET /api/v1/email-log": "log",
    "GET /api/v1/messages": "messages list",
    "GET /api/v1/messages/{queue_id}": "messages show",
    "GET /api/v1/messages/{queue_id}/raw": "messages show --raw",
    "POST /api/v1/messages/{queue_id}/retry": "quarantine retry",
    "GET /api/v1/routing-addresses": "routing list",
    "POST /api/v1/routing-addresses": "routing add",
    "GET /api/v1/routing-addresses/{address}": "routing show",
    "PATCH /api/v1/routing-addresses/{address}": "routing set",
    "DELETE /api/v1/routing-addresses/{address}": "routing remove",
    "GET /api/v1/contacts": "contacts list",
    "POST /api/v1/contacts": "contacts add",
    "GET /api/v1/cases": "cases list",
    "GET /api/v1/cases/{number}": "cases show",
    "PATCH /api/v1/cases/{number}": "cases set",
    "GET /api/v1/cases/{number}/emails": "cases show",
    "POST /api/v1/cases/{number}/emails": "cases reply",
    "GET /api/v1/cases/{number}/attachments/{attachment_id}": "cases attachment",
    "GET /api/v1/auto-response-rules": "autoresponse list",
    "POST /api/v1/auto-response-rules": "autoresponse add",
    "GET /api/v1/auto-response-rules/{rule}": "autoresponse show",
    "PATCH /api/v1/auto-response-rules/{rule}": "autoresponse update",
    "DELETE /api/v1/auto-response-rules/{rule}": "autoresponse remove",
    "GET /api/v1/outbound": "outbound list",
    "POST /api/v1/outbound": "send",
    "GET /api/v1/outbound/{queue_id}": "outbound show",
    "POST /api/v1/outbound/{queue_id}/retry": "outbound retry",
    "GET /api/v1/relays": "relay list",
    "POST /api/v1/relays": "relay add",
    "GET /api/v1/relays/{relay}": "relay show",
    "DELETE /api/v1/relays/{relay}": "relay remove",
    "GET /api/v1/relay-filters": "relay filter list",
    "POST /api/v1/relay-filters": "relay filter add",
    "DELETE /api/v1/relay-filters/{filter_id}": "relay filter remove",
    "GET /api/v1/dkim-keys": "dkim list",
    "POST /api/v1/dkim-keys": "dkim create",
    "POST /api/v1/dkim-keys/{domain}/check": "dkim check",
    "POST /api/v1/dkim-keys/{domain}/rotate": "dkim rotate",
    "GET /api/v1/bounces": "bounces list",
    "DELETE /api/v1/bounces/{address}": "bounces clear",
    "GET /api/v1/tasks": "tasks list",
    "GET /api/v1/tasks/{task_id}": "tasks show",
    "PATCH /api/v1/tasks/{task_id}": "tasks set-status",
    "GET /api/v1/users": "user list",
    "POST /api/v1/users": "user add",
    "GET /api/v1/users/{email}": "user show",
    "PATCH /api/v1/users/{email}": "user set",
    "PUT /api/v1/users/{email}/password": "user passwd",
    "GET /api/v1/queues": "queue list",
    "POST /api/v1/queues": "queue add",
    "PUT /api/v1/queues/{name}/members/{email}": "queue member",
    "DELETE /api/v1/queues/{name}/members/{email}": "queue member",
    "GET /api/v1/sources": "source list",
    "POST /api/v1/sources": "source add",
    "GET /api/v1/sources/{source}": "source show",
    "DELETE /api/v1/sources/{source}": "source remove",
    "POST /api/v1/sources/{source}/pause": "source pause",
    "POST /api/v1/sources/{source}/resume": "source resume",
    "POST /api/v1/sources/{source}/test": "source test",
    "PUT /api/v1/sources/{source}/trusted": "source trust",
}

#: Operations with no CLI counterpart, each with the reason.
NOT_FOR_THE_CLI = {
    "GET /healthz": "a probe for load balancers; every CLI command reports an unusable "
                    "database in one line",
    "GET /metrics": "a Prometheus scrape target, not an operation",
}


def _api_operations() -> set[str]:
    app = create_app(create_engine("sqlite://"), Metrics(), enqueue_hooks=())
    return {f"{method.upper()} {path}"
            for path, ops in app.openapi()["paths"].items() for method in ops}


def _command(words: list[str]) -> click.Command:
    cmd: click.Command = cli
    for word in words:
        assert isinstance(cmd, click.Group), f"{cmd.name} has no subcommands ({word})"
        sub = cmd.commands.get(word)
        assert sub is not None, f"no command `mailcase ... {word}`"
        cmd = sub
    return cmd


def test_every_api_operation_has_a_cli_command() -> None:
    ops = _api_operations()
    missing = sorted(ops - set(API_TO_CLI) - set(NOT_FOR_THE_CLI))
    assert not missing, f"API operations without a CLI command (add one and map it): {missing}"
    stale = sorted((set(API_TO_CLI) | set(NOT_FOR_THE_CLI)) - ops)
    assert not stale, f"mapped operations the API no longer has: {stale}"


def test_every_mapped_command_exists() -> None:
    for op, line in API_TO_CLI.items():
        words = line.split()
        options = [w for w in words if w.startswith("--")]
        cmd = _command([w for w in words if not w.startswith("--")])
        assert not isinstance(cmd, click.Group), (op, line)
        flags = {o for p in cmd.params for o in p.opts}
        assert set(options) <= flags, (op, line)
