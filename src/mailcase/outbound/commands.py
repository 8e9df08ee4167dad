"""`mailcase send`, `mailcase outbound list|show|retry` and `mailcase relay ...`.

The outbound queue lives in the database: these commands work whether or not `mailcase serve`
runs; a running server picks enqueued mail up on its next poll (``delivery.poll_interval``).
Relay passwords are read from a prompt or stdin, never from the command line (it would show in
`ps` and shell history), and never printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mailcase.clikit import Ctx, echo_json, rows, table

__all__ = ["register"]

_TLS_MODES = ("off", "preferred", "required", "preferred_verify", "required_verify")


def _build_message(
    mail_from: str, to: tuple[str, ...], subject: str, body: str
) -> bytes:
    from mailcase.outbound.compose import OutgoingEmail, compose

    return compose(OutgoingEmail(from_addr=mail_from, to=to, subject=subject, text=body))


@click.command("send")
@click.option("--from", "mail_from", required=True, help="Sender address (From and MAIL FROM).")
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable).")
@click.option("--subject", default="", help="Subject (ignored with --eml).")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="UTF-8 text file with the body.")
@click.option("--eml", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A complete RFC 5322 message to send as it is.")
@click.option("--category", type=click.Choice(["system", "auto", "user"]), default="user",
              show_default=True, help="Deliverability category.")
@click.pass_obj
def send_cmd(obj: Ctx, mail_from: str, to: tuple[str, ...], subject: str,
             body_file: Path | None, eml: Path | None, category: str) -> None:
    """Queue a message for delivery; prints its queue id."""
    from mailcase.outbound.queue import EnqueueError, enqueue
    from mailcase.storage.db import begin_write

    if eml is not None and body_file is not None:
        raise click.UsageError("use --body-file or --eml, not both")
    if eml is not None:
        content = eml.read_bytes()
    else:
        body = body_file.read_text(encoding="utf-8") if body_file is not None else ""
        try:
            content = _build_message(mail_from, to, subject, body)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    try:
        with begin_write(obj.engine()) as conn:
            qid = enqueue(conn, mail_from=mail_from, rcpt_to=list(to), content=content,
                          category=category, source="cli")
    except EnqueueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(qid)


@click.group("outbound")
def outbound() -> None:
    """The outbound queue: what mailcase sends, each message's attempts and state."""


@outbound.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--state", type=click.Choice(["queued", "held", "delivered", "bounced"]),
              default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1_000_000))
@click.pass_obj
def outbound_list(obj: Ctx, as_json: bool, state: str | None, limit: int) -> None:
    """Queued and sent messages, newest first."""
    from mailcase.outbound.queue import list_messages

    data = list_messages(obj.engine(), state=state, limit=limit)
    if as_json:
        echo_json(data)
        return
    for r in data:
        r["to"] = ",".join(f"{x['address']}({x['state']})" for x in r["recipients"])
    table(rows(data), ["queue_id", "created_at", "state", "category", "attempts",
                       "next_attempt_at", "mail_from", "to"])


@outbound.command("show")
@click.argument("queue_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def outbound_show(obj: Ctx, queue_id: str, as_json: bool) -> None:
    """One message: envelope, recipients and every attempt with its TLS facts."""
    from mailcase.outbound.queue import show_message

    m = show_message(obj.engine(), queue_id)
    if m is None:
        raise click.ClickException(
            f"no outbound message {queue_id!r}; see `mailcase outbound list`"
        )
    if as_json:
        echo_json(m)
        return
    for k in ("queue_id", "state", "category", "source", "mail_from", "message_id", "size",
              "created_at", "attempts", "next_attempt_at", "finished_at"):
        click.echo(f"{k}: {rows([{k: m[k]}])[0][k] if m[k] is not None else '-'}")
    click.echo("recipients:")
    table(rows(m["recipients"]), ["address", "state", "attempts", "last_stage",
                                  "last_reply_code", "last_reply"])
    click.echo("attempts:")
    for a in m["attempts"]:
        a["tls"] = (f"{a['tls_version']}:{a['tls_cipher']}" if a["tls_version"]
                    else ("plaintext" if a["remote_host"] else "-"))
        a["verified"] = (a["verified_by"] or "yes") if a["tls_verified"] else "no"
    table(rows(m["attempts"]), ["attempt", "started_at", "recipient", "result", "relay",
                                "remote_host", "remote_ip", "tls", "verified", "stage",
                                "reply_code", "reply_text"])


@outbound.command("retry")
@click.argument("queue_id")
@click.pass_obj
def outbound_retry(obj: Ctx, queue_id: str) -> None:
    """Try a queued message again now (instead of at its next scheduled attempt)."""
    from mailcase.outbound.queue import retry_now

    if not retry_now(obj.engine(), queue_id):
        raise click.ClickException(
            f"no queued message {queue_id!r} (delivered, bounced and held mail is not retried)"
        )
    click.echo(f"{queue_id}: due now")


# ---------------------------------------------------------------- relays
@click.group("relay")
def relay() -> None:
    """Email Relay: smarthosts and the domain filters that route mail through them."""


def _relay_error(e: Exception) -> click.ClickException:
    return click.ClickException(str(e))


@relay.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Host name, IP address, or mx:DOMAIN.")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535),
              help="25, 587, 465 (implicit TLS) or any.")
@click.option("--tls", "tls_mode", type=click.Choice(_TLS_MODES), default="preferred",
              show_default=True, help="TLS mode (AUTH forces required_verify).")
@click.option("--auth", "auth", type=click.Choice(["PLAIN", "LOGIN"], case_sensitive=False),
              default=None, help="SMTP AUTH mechanism.")
@click.option("--username", default=None)
@click.option("--password-stdin", is_flag=True,
              help="Read the password from stdin (else it is prompted for).")
@click.option("--inactive", is_flag=True, help="Store it switched off.")
@click.pass_obj
def relay_add(obj: Ctx, name: str, host: str, port: int, tls_mode: str, auth: str | None,
              username: str | None, password_stdin: bool, inactive: bool) -> None:
    """Add a relay."""
    from mailcase.delivery.relays import RelayError, add_relay

    password: str | None = None
    if auth:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True)
    try:
        r = add_relay(obj.engine(), obj.settings(), name=name, host=host, port=port,
                      tls_mode=tls_mode, auth_mechanism=auth, username=username, password=password,
                      active=not inactive)
    except RelayError as e:
        raise _relay_error(e) from None
    forced = auth and tls_mode != r["tls_mode"]
    note = " (AUTH: TLS mode forced to required_verify)" if forced else ""
    click.echo(f"relay {r['name']} (id {r['id']}) added{note}")


@relay.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def relay_list(obj: Ctx, as_json: bool) -> None:
    """Relays (passwords are never shown)."""
    from mailcase.delivery.relays import list_relays

    data = list_relays(obj.engine())
    if as_json:
        echo_json(data)
        return
    table(rows(data), ["id", "name", "host", "host_kind", "port", "tls_mode",
                       "auth_mechanism", "username", "active"])


@relay.command("remove")
@click.argument("name")
@click.pass_obj
def relay_remove(obj: Ctx, name: str) -> None:
    """Remove a relay (by name or id) and its filters."""
    from mailcase.delivery.relays import RelayError, remove_relay

    try:
        remove_relay(obj.engine(), name)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"relay {name} removed")


@relay.group("filter")
def relay_filter() -> None:
    """Email domain filters: which mail goes through which relay (first match wins)."""


@relay_filter.command("add")
@click.option("--relay", "relay_name", required=True, help="Relay name or id.")
@click.option("--sender", default="*", show_default=True,
              help="Sender domain patterns, comma-separated (example.com, *.example.com, *).")
@click.option("--recipient", default="*", show_default=True,
              help="Recipient domain patterns, comma-separated.")
@click.option("--priority", default=100, show_default=True, type=int,
              help="Lower is tried first.")
@click.option("--inactive", is_flag=True)
@click.pass_obj
def filter_add(obj: Ctx, relay_name: str, sender: str, recipient: str, priority: int,
               inactive: bool) -> None:
    """Route mail matching both patterns through a relay."""
    from mailcase.delivery.relays import RelayError, add_filter

    try:
        f = add_filter(obj.engine(), relay=relay_name, sender=sender, recipient=recipient,
                       priority=priority, active=not inactive)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"filter {f['id']} added: sender {f['sender_pattern']} recipient "
               f"{f['recipient_pattern']} -> {f['relay']} (priority {f['priority']})")


@relay_filter.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def filter_list(obj: Ctx, as_json: bool) -> None:
    """Filters in match order."""
    from mailcase.delivery.relays import list_filters

    data: list[dict[str, Any]] = list_filters(obj.engine())
    if as_json:
        echo_json(data)
        return
    table(rows(data), ["id", "priority", "sender_pattern", "recipient_pattern", "relay",
                       "active"])


@relay_filter.command("remove")
@click.argument("filter_id", type=int)
@click.pass_obj
def filter_remove(obj: Ctx, filter_id: int) -> None:
    """Remove a filter by id."""
    from mailcase.delivery.relays import RelayError, remove_filter

    try:
        remove_filter(obj.engine(), filter_id)
    except RelayError as e:
        raise _relay_error(e) from None
    click.echo(f"filter {filter_id} removed")


def register(cli: click.Group) -> None:
    """Add `send`, `outbound` and `relay` to the `mailcase` command."""
    cli.add_command(send_cmd)
    cli.add_command(outbound)
    cli.add_command(relay)
